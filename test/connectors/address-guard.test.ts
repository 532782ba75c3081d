import t from 'tap';
import { createServer } from 'node:http';
import { addressRefusal, resolveAllowed } from '../../src/lib/address-guard.ts';
import { httpRequest, parseRetryAfter } from '../../src/lib/http-client.ts';
import { expectCode } from '../fakes/databases.ts';

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
