import t from 'tap';
import { createServer } from 'node:http';
import { createServer as createTcpServer, type Socket } from 'node:net';
import { addressRefusal, guardedSocket, resolveAllowed } from '../../src/lib/address-guard.ts';
import { httpRequest, parseRetryAfter } from '../../src/lib/http-client.ts';
import { closedPort, expectCode } from '../fakes/databases.ts';

t.test('metadata and link-local addresses are always refused', async (t) => {
  for (const ip of ['169.254.169.254', '169.254.0.1', 'fe80::1', '[fe80::1%eth0]', 'fd00:ec2::254', '::ffff:169.254.169.254', '::ffff:a9fe:a9fe', '64:ff9b::a9fe:a9fe']) {
    t.ok(addressRefusal(ip, false), `${ip} refused even when private networks are allowed`);
  }
});

t.test('loopback and private ranges are refused only with denyPrivateNetworks', async (t) => {
  for (const ip of ['127.0.0.1', '127.1.2.3', '10.1.2.3', '172.16.0.1', '172.31.255.255', '192.168.1.1', '0.0.0.0', '::1', 'fc00::1', 'fd12:3456::1', '::ffff:127.0.0.1', '::ffff:7f00:1']) {
    t.equal(addressRefusal(ip, false), undefined, `${ip} allowed by default`);
    t.ok(addressRefusal(ip, true), `${ip} refused when denied`);
  }
  for (const ip of ['8.8.8.8', '172.32.0.1', '192.169.0.1', '2606:4700::1111', '::ffff:8.8.8.8']) {
    t.equal(addressRefusal(ip, true), undefined, `${ip} is public`);
  }
});

// Every block of the IANA IPv4 and IPv6 Special-Purpose Address Registries
// (https://www.iana.org/assignments/iana-ipv4-special-registry,
// https://www.iana.org/assignments/iana-ipv6-special-registry), multicast, and the cloud metadata
// endpoints, with the verdict the guard must give: 'always' = refused even when private networks
// are allowed; 'private' = refused only with denyPrivateNetworks (not globally reachable);
// 'allowed' = globally reachable. IPv6 forms that carry an IPv4 address take the stricter verdict.
const TABLE: [string, 'always' | 'private' | 'allowed', string][] = [
  // IPv4 special-purpose registry
  ['0.0.0.0', 'private', '0.0.0.0/8 this network'],
  ['0.255.255.255', 'private', '0.0.0.0/8 this network'],
  ['10.0.0.1', 'private', '10.0.0.0/8 private-use'],
  ['10.255.255.254', 'private', '10.0.0.0/8 private-use'],
  ['100.64.0.1', 'private', '100.64.0.0/10 shared address space'],
  ['100.127.255.254', 'private', '100.64.0.0/10 shared address space'],
  ['127.0.0.1', 'private', '127.0.0.0/8 loopback'],
  ['127.255.255.254', 'private', '127.0.0.0/8 loopback'],
  ['169.254.0.1', 'always', '169.254.0.0/16 link local'],
  ['169.254.169.254', 'always', '169.254.0.0/16 link local (AWS/GCP/Azure/OCI metadata)'],
  ['172.16.0.1', 'private', '172.16.0.0/12 private-use'],
  ['172.31.255.254', 'private', '172.16.0.0/12 private-use'],
  ['192.0.0.1', 'private', '192.0.0.0/24 IETF protocol assignments'],
  ['192.0.0.8', 'private', '192.0.0.8/32 IPv4 dummy address'],
  ['192.0.0.9', 'allowed', '192.0.0.9/32 PCP anycast (globally reachable)'],
  ['192.0.0.10', 'allowed', '192.0.0.10/32 TURN anycast (globally reachable)'],
  ['192.0.0.170', 'private', '192.0.0.170/32 NAT64/DNS64 discovery'],
  ['192.0.0.171', 'private', '192.0.0.171/32 NAT64/DNS64 discovery'],
  ['192.0.2.1', 'private', '192.0.2.0/24 documentation (TEST-NET-1)'],
  ['192.31.196.1', 'allowed', '192.31.196.0/24 AS112-v4 (globally reachable)'],
  ['192.52.193.1', 'allowed', '192.52.193.0/24 AMT (globally reachable)'],
  ['192.88.99.1', 'private', '192.88.99.0/24 deprecated 6to4 relay anycast'],
  ['192.168.0.1', 'private', '192.168.0.0/16 private-use'],
  ['192.168.255.254', 'private', '192.168.0.0/16 private-use'],
  ['192.175.48.1', 'allowed', '192.175.48.0/24 direct delegation AS112 (globally reachable)'],
  ['198.18.0.1', 'private', '198.18.0.0/15 benchmarking'],
  ['198.19.255.254', 'private', '198.18.0.0/15 benchmarking'],
  ['198.51.100.1', 'private', '198.51.100.0/24 documentation (TEST-NET-2)'],
  ['203.0.113.1', 'private', '203.0.113.0/24 documentation (TEST-NET-3)'],
  ['240.0.0.1', 'private', '240.0.0.0/4 reserved'],
  ['255.255.255.254', 'private', '240.0.0.0/4 reserved'],
  ['255.255.255.255', 'private', '255.255.255.255/32 limited broadcast'],
  ['224.0.0.1', 'private', '224.0.0.0/4 multicast'],
  ['239.255.255.255', 'private', '224.0.0.0/4 multicast'],
  // cloud metadata endpoints outside link-local
  ['100.100.100.200', 'always', 'Alibaba Cloud metadata'],
  ['168.63.129.16', 'always', 'Azure WireServer'],
  ['fd00:ec2::254', 'always', 'AWS IMDS over IPv6'],
  ['fd20:ce::254', 'always', 'Google Cloud metadata over IPv6'],
  // IPv6 special-purpose registry
  ['::1', 'private', '::1/128 loopback'],
  ['::', 'private', '::/128 unspecified'],
  ['::ffff:8.8.8.8', 'allowed', '::ffff:0:0/96 IPv4-mapped, public'],
  ['::ffff:127.0.0.1', 'private', '::ffff:0:0/96 IPv4-mapped loopback'],
  ['::ffff:169.254.169.254', 'always', '::ffff:0:0/96 IPv4-mapped metadata'],
  ['::ffff:a9fe:a9fe', 'always', '::ffff:0:0/96 IPv4-mapped metadata (hex)'],
  ['::ffff:0:a9fe:a9fe', 'always', '::ffff:0:0:0/96 SIIT-translated metadata'],
  ['::a9fe:a9fe', 'always', '::/96 IPv4-compatible metadata'],
  ['::7f00:1', 'private', '::/96 IPv4-compatible loopback'],
  ['::808:808', 'private', '::/96 IPv4-compatible (deprecated, reserved by IETF)'],
  ['64:ff9b::808:808', 'allowed', '64:ff9b::/96 well-known NAT64 prefix, public'],
  ['64:ff9b::7f00:1', 'private', '64:ff9b::/96 NAT64 of loopback'],
  ['64:ff9b::a9fe:a9fe', 'always', '64:ff9b::/96 NAT64 of metadata'],
  ['64:ff9b:1::1', 'private', '64:ff9b:1::/48 local-use IPv4/IPv6 translation'],
  ['64:ff9b:1::a9fe:a9fe', 'always', '64:ff9b:1::/48 local-use NAT64 (/96 form) of metadata'],
  ['64:ff9b:1:a9fe:a9:fe00::', 'always', '64:ff9b:1::/48 local-use NAT64 (/48 form) of metadata'],
  ['100::1', 'private', '100::/64 discard-only'],
  ['100:0:0:1::1', 'private', '100:0:0:1::/64 dummy IPv6 prefix'],
  ['2001:1::1', 'allowed', '2001:1::1/128 PCP anycast (globally reachable)'],
  ['2001:1::2', 'allowed', '2001:1::2/128 TURN anycast (globally reachable)'],
  ['2001:1::3', 'allowed', '2001:1::3/128 DNS-SD SRP anycast (globally reachable)'],
  ['2001:2::1', 'private', '2001:2::/48 benchmarking'],
  ['2001:3::1', 'allowed', '2001:3::/32 AMT (globally reachable)'],
  ['2001:4:112::1', 'allowed', '2001:4:112::/48 AS112-v6 (globally reachable)'],
  ['2001:10::1', 'private', '2001:10::/28 deprecated ORCHID'],
  ['2001:20::1', 'allowed', '2001:20::/28 ORCHIDv2 (globally reachable)'],
  ['2001:30::1', 'allowed', '2001:30::/28 drone remote ID (globally reachable)'],
  ['2001:5::1', 'private', '2001::/23 IETF protocol assignments'],
  ['2001:0:808:808::fefe:fefe', 'allowed', '2001::/32 Teredo, public server and client'],
  ['2001:0:808:808::5601:5601', 'always', '2001::/32 Teredo whose client is 169.254.169.254'],
  ['2001:0:a9fe:a9fe::fefe:fefe', 'always', '2001::/32 Teredo whose server is 169.254.169.254'],
  ['2001:db8::1', 'private', '2001:db8::/32 documentation'],
  ['2002:808:808::1', 'allowed', '2002::/16 6to4 of a public address'],
  ['2002:7f00:1::1', 'private', '2002::/16 6to4 of loopback'],
  ['2002:a9fe:a9fe::1', 'always', '2002::/16 6to4 of metadata'],
  ['2620:4f:8000::1', 'allowed', '2620:4f:8000::/48 direct delegation AS112 (globally reachable)'],
  ['3fff::1', 'private', '3fff::/20 documentation'],
  ['5f00::1', 'private', '5f00::/16 segment routing SIDs'],
  ['fc00::1', 'private', 'fc00::/7 unique-local'],
  ['fdff:ffff::1', 'private', 'fc00::/7 unique-local'],
  ['fe80::1', 'always', 'fe80::/10 link-local'],
  ['febf:ffff::1', 'always', 'fe80::/10 link-local'],
  ['fec0::1', 'private', 'fec0::/10 deprecated site-local'],
  ['ff02::1', 'private', 'ff00::/8 multicast'],
  ['4000::1', 'private', 'outside 2000::/3: reserved by the IETF'],
  // ordinary public addresses
  ['8.8.8.8', 'allowed', 'public'],
  ['172.32.0.1', 'allowed', 'public, just past 172.16.0.0/12'],
  ['100.128.0.1', 'allowed', 'public, just past 100.64.0.0/10'],
  ['198.20.0.1', 'allowed', 'public, just past 198.18.0.0/15'],
  ['223.255.255.255', 'allowed', 'public, just below multicast'],
  ['2606:4700::1111', 'allowed', 'public'],
  ['2a00:1450:4001::1', 'allowed', 'public'],
];

t.test('IANA special-purpose registries, table-tested', async (t) => {
  for (const [ip, verdict, what] of TABLE) {
    const lax = addressRefusal(ip, false);
    const strict = addressRefusal(ip, true);
    const got = lax ? 'always' : strict ? 'private' : 'allowed';
    t.equal(got, verdict, `${ip} (${what})`);
  }
});

t.test('database sockets: a refusal by policy looks exactly like a closed port', async (t) => {
  let contacted = 0;
  const srv = createTcpServer((s) => {
    contacted++;
    s.destroy();
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.teardown(() => srv.close());
  const open = (srv.address() as { port: number }).port;
  const closed = await closedPort();
  const failure = (s: Socket) =>
    new Promise<NodeJS.ErrnoException>((resolve, reject) => {
      s.once('connect', () => reject(new Error('connected')));
      s.once('error', resolve);
    });
  const refusedClosed = await failure(guardedSocket({ host: '127.0.0.1', port: closed, denyPrivateNetworks: false }));
  const refusedPolicy = await failure(guardedSocket({ host: '127.0.0.1', port: closed, denyPrivateNetworks: true }));
  const refusedPolicyOpen = await failure(guardedSocket({ host: '127.0.0.1', port: open, denyPrivateNetworks: true }));
  const refusedByName = await failure(guardedSocket({ host: 'localhost', port: open, denyPrivateNetworks: true }));
  const metadata = await failure(guardedSocket({ host: '169.254.169.254', port: 80, denyPrivateNetworks: false }));
  for (const e of [refusedClosed, refusedPolicy, refusedPolicyOpen, metadata]) t.equal(e.code, 'ECONNREFUSED');
  t.equal(refusedPolicy.message, refusedClosed.message, 'same message as a closed port');
  t.equal(refusedPolicyOpen.message, `connect ECONNREFUSED 127.0.0.1:${open}`, 'an open port refused by policy answers like a closed one');
  t.equal(refusedByName.code, 'ECONNREFUSED');
  t.match(refusedByName.message, new RegExp(`^connect ECONNREFUSED (127\\.0\\.0\\.1|::1):${open}$`));
  t.equal(metadata.message, 'connect ECONNREFUSED 169.254.169.254:80');
  t.equal(contacted, 0, 'a refused address is never contacted');
  // Allowed: the socket reaches the checked address, and keeps the host name for TLS.
  const ok = guardedSocket({ host: 'localhost', port: open, denyPrivateNetworks: false });
  t.equal(ok.host, 'localhost');
  await new Promise<void>((resolve, reject) => {
    ok.once('connect', () => resolve());
    ok.once('error', reject);
  });
  ok.destroy();
});

t.test('host names are checked after resolution', async (t) => {
  await expectCode(t, resolveAllowed('localhost', true), 'address_not_allowed');
  t.ok((await resolveAllowed('localhost', false)).length > 0);
  await expectCode(t, resolveAllowed('169.254.169.254', false), 'address_not_allowed');
});

t.test('http client: guard, size limit without content-length, abort, Retry-After', async (t) => {
  let hits = 0;
  let onSlow = () => {};
  const srv = createServer((req, res) => {
    hits++;
    if (req.url === '/big') {
      res.writeHead(200); // chunked, no content-length
      for (let i = 0; i < 20; i++) res.write(Buffer.alloc(4096, 'y'));
      return res.end();
    }
    if (req.url === '/slow') return void onSlow(); // never answered: the caller aborts
    res.end('ok');
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    srv.closeAllConnections();
    srv.close();
  });
  const port = (srv.address() as { port: number }).port;
  const base = { method: 'GET', timeoutMs: 3000, maxResponseBytes: 10_000, denyPrivateNetworks: false };
  const ok = await httpRequest({ ...base, url: `http://127.0.0.1:${port}/` });
  t.equal(ok.status, 200);
  t.equal(ok.body.toString(), 'ok');
  await expectCode(t, httpRequest({ ...base, url: `http://127.0.0.1:${port}/big` }), 'response_too_large');
  await expectCode(t, httpRequest({ ...base, url: `http://localhost:${port}/`, denyPrivateNetworks: true }), 'address_not_allowed');
  await expectCode(t, httpRequest({ ...base, url: `http://[::ffff:127.0.0.1]:${port}/`, denyPrivateNetworks: true }), 'address_not_allowed');
  await expectCode(t, httpRequest({ ...base, url: `http://169.254.169.254/latest/meta-data` }), 'address_not_allowed');
  const ac = new AbortController();
  onSlow = () => ac.abort(); // once the request is in flight
  await expectCode(t, httpRequest({ ...base, url: `http://127.0.0.1:${port}/slow`, signal: ac.signal }), 'cancelled');
  await expectCode(t, httpRequest({ ...base, url: 'file:///etc/passwd' }), 'invalid_url');
  const before = hits;
  await expectCode(t, httpRequest({ ...base, url: `http://127.0.0.1:${port}/`, denyPrivateNetworks: true }), 'address_not_allowed');
  t.equal(hits, before, 'a refused address is never contacted');
  t.equal(parseRetryAfter('120'), 120_000);
  t.equal(parseRetryAfter('Wed, 21 Oct 2015 07:28:00 GMT', Date.parse('Wed, 21 Oct 2015 07:27:00 GMT')), 60_000);
  t.equal(parseRetryAfter('soon'), undefined);
});
