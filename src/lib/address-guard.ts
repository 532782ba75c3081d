import { connect as netConnect, isIP, type Socket } from 'node:net';
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import ipaddr from 'ipaddr.js';
import { ConnectorError } from '../errors.ts';

// Outbound address guard (DESIGN §7). Checked on the addresses DNS returned, and the socket
// connects to exactly the address that was checked (guardedLookup for HTTP, guardedSocket for
// the database drivers), so a name that re-resolves between check and connect (DNS rebinding)
// cannot slip through.
//
// Ranges come from ipaddr.js (its SpecialRanges follow the IANA IPv4 and IPv6 Special-Purpose
// Address Registries, https://www.iana.org/assignments/iana-ipv4-special-registry and
// https://www.iana.org/assignments/iana-ipv6-special-registry). Two policies:
// - always refused: link-local and cloud metadata endpoints, in every encoding (an IPv6 address
//   that embeds an IPv4 one is judged by the embedded address as well);
// - refused when private networks are denied: everything that is not global unicast (loopback,
//   RFC 1918, CGNAT, benchmarking, documentation, reserved, multicast, broadcast, unique-local…).

/** Cloud metadata endpoints outside the link-local ranges. */
const METADATA = new Set([
  '100.100.100.200', // Alibaba Cloud metadata
  '168.63.129.16', // Azure WireServer / platform DNS
  'fd00:ec2::254', // AWS IMDS over IPv6
  'fd20:ce::254', // Google Cloud metadata over IPv6
]);

type Verdict = 'allowed' | 'private' | 'always';
const RANK: Record<Verdict, number> = { allowed: 0, private: 1, always: 2 };
const worst = (a: Verdict, b: Verdict): Verdict => (RANK[b] > RANK[a] ? b : a);

// Special-purpose blocks the registries mark "Globally Reachable: True": ordinary destinations.
const GLOBAL_V4_RANGES = new Set(['as112', 'amt']);
const GLOBAL_V4 = new Set(['192.0.0.9', '192.0.0.10']); // PCP and TURN anycast
const GLOBAL_V6_RANGES = new Set(['amt', 'as112v6', 'orchid2', 'droneRemoteIdProtocolEntityTags']);
const GLOBAL_V6 = new Set(['2001:1::1', '2001:1::2', '2001:1::3']); // PCP, TURN and DNS-SD SRP anycast
const GLOBAL_UNICAST = ipaddr.IPv6.parseCIDR('2000::/3'); // the only block IANA allocates for global unicast
const NAT64_LOCAL = ipaddr.IPv6.parseCIDR('64:ff9b:1::/48');

function ipv4Verdict(a: ipaddr.IPv4): Verdict {
  const range = a.range();
  const s = a.toString();
  if (range === 'linkLocal' || METADATA.has(s)) return 'always';
  return range === 'unicast' || GLOBAL_V4_RANGES.has(range) || GLOBAL_V4.has(s) ? 'allowed' : 'private';
}

const v4 = (hi: number, lo: number) => new ipaddr.IPv4([hi >> 8, hi & 255, lo >> 8, lo & 255]);

/**
 * The IPv4 addresses an IPv6 address may carry: IPv4-mapped (::ffff:0:0/96), SIIT (::ffff:0:0:0/96),
 * IPv4-compatible (::/96), NAT64 (64:ff9b::/96, and every RFC 6052 position in 64:ff9b:1::/48,
 * whose prefix length the operator picks), 6to4 (2002::/16) and Teredo (server and client).
 */
function embeddedIpv4(a: ipaddr.IPv6): ipaddr.IPv4[] {
  const p = a.parts;
  const out: ipaddr.IPv4[] = [];
  const zeros = (from: number, to: number) => p.slice(from, to).every((x) => x === 0);
  if (zeros(0, 5) && (p[5] === 0xffff || p[5] === 0)) out.push(v4(p[6], p[7])); // mapped, compatible
  if (zeros(0, 4) && p[4] === 0xffff && p[5] === 0) out.push(v4(p[6], p[7])); // SIIT
  if (p[0] === 0x64 && p[1] === 0xff9b) {
    out.push(v4(p[6], p[7])); // /96
    if (a.match(NAT64_LOCAL)) {
      // RFC 6052 §2.2: /48 → bits 48-63 and 72-87, /56 → 56-63 and 72-95, /64 → 72-103 (bits 64-71 are "u").
      const b = a.toByteArray();
      out.push(new ipaddr.IPv4([b[6], b[7], b[9], b[10]]), new ipaddr.IPv4([b[7], b[9], b[10], b[11]]), new ipaddr.IPv4([b[9], b[10], b[11], b[12]]));
    }
  }
  if (p[0] === 0x2002) out.push(v4(p[1], p[2])); // 6to4
  if (p[0] === 0x2001 && p[1] === 0) out.push(v4(p[2], p[3]), v4(p[6] ^ 0xffff, p[7] ^ 0xffff)); // Teredo server, client (obfuscated)
  return out;
}

/** Ranges that only carry an IPv4 address: judged by what they embed. */
const CARRIERS = new Set(['ipv4Mapped', 'rfc6145', '6to4', 'teredo']);

function ipv6Verdict(a: ipaddr.IPv6): Verdict {
  const s = a.toString();
  if (METADATA.has(s)) return 'always';
  const range = a.range();
  if (range === 'linkLocal') return 'always';
  let embedded: Verdict = 'allowed';
  for (const e of embeddedIpv4(a)) embedded = worst(embedded, ipv4Verdict(e));
  if (embedded === 'always') return 'always';
  if (CARRIERS.has(range)) return embedded;
  if (range === 'rfc6052') return a.match(NAT64_LOCAL) ? 'private' : embedded; // well-known NAT64: as the IPv4 it reaches
  if (range === 'unicast') return a.match(GLOBAL_UNICAST) ? 'allowed' : 'private'; // outside 2000::/3 is reserved by the IETF (incl. ::/96)
  return GLOBAL_V6_RANGES.has(range) || GLOBAL_V6.has(s) ? 'allowed' : 'private';
}

/** Why an address may not be contacted, or undefined when it may. */
export function addressRefusal(address: string, denyPrivateNetworks: boolean): string | undefined {
  const ip = address.replace(/^\[|\]$/g, '').replace(/%.*$/, '');
  const family = isIP(ip);
  if (family === 0) return `"${address}" is not an IP address`;
  let parsed: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    parsed = family === 4 ? ipaddr.IPv4.parse(ip) : ipaddr.IPv6.parse(ip);
  } catch {
    return `"${address}" is not an IP address`;
  }
  const verdict = parsed.kind() === 'ipv4' ? ipv4Verdict(parsed as ipaddr.IPv4) : ipv6Verdict(parsed as ipaddr.IPv6);
  if (verdict === 'always') return `${address} is a link-local or cloud metadata address`;
  if (verdict === 'private' && denyPrivateNetworks) return `${address} is a loopback, private or special-purpose address and private networks are denied`;
  return undefined;
}

export function addressNotAllowed(host: string, reason: string): ConnectorError {
  return new ConnectorError('address_not_allowed', `Refusing to connect to ${host}: ${reason}.`, {
    classification: 'fatal',
    status: 400,
    hint: 'Use a public address, or (for private networks) ask the operator to allow them (BACKHAUL_DENY_PRIVATE_NETWORKS=false). Metadata and link-local addresses are never allowed.',
  });
}

/** Throws address_not_allowed unless `address` (an IP) may be contacted. */
export function assertAddressAllowed(address: string, denyPrivateNetworks: boolean, host = address): void {
  const reason = addressRefusal(address, denyPrivateNetworks);
  if (reason) throw addressNotAllowed(host, reason);
}

interface Checked {
  addresses: LookupAddress[];
  /** The first address the policy refuses, with why. */
  refused?: { address: string; reason: string };
}

function resolveChecked(host: string, denyPrivateNetworks: boolean): Promise<Checked> {
  const bare = host.replace(/^\[|\]$/g, '');
  const check = (addresses: LookupAddress[]): Checked => {
    for (const a of addresses) {
      const reason = addressRefusal(a.address, denyPrivateNetworks);
      if (reason) return { addresses, refused: { address: a.address, reason } };
    }
    return { addresses };
  };
  if (isIP(bare)) return Promise.resolve(check([{ address: bare, family: isIP(bare) }]));
  return new Promise((resolve, reject) => {
    dnsLookup(bare, { all: true, verbatim: true }, (err, addresses) => (err ? reject(err) : resolve(check(addresses))));
  });
}

/** Resolves `host` and checks every address it resolves to (all must be allowed). */
export async function resolveAllowed(host: string, denyPrivateNetworks: boolean): Promise<LookupAddress[]> {
  const { addresses, refused } = await resolveChecked(host, denyPrivateNetworks);
  if (refused) throw addressNotAllowed(host, refused.reason);
  return addresses;
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

/**
 * A `lookup` for net/http/https options: resolves with the guard applied, and hands the socket
 * the checked addresses, so the connection goes where the check looked.
 */
export function guardedLookup(denyPrivateNetworks: boolean) {
  return (hostname: string, options: { all?: boolean; family?: number | string } | number, callback: LookupCallback): void => {
    const opts = typeof options === 'number' ? { family: options } : options ?? {};
    resolveAllowed(hostname, denyPrivateNetworks).then(
      (addresses) => {
        const fam = opts.family === 'IPv4' ? 4 : opts.family === 'IPv6' ? 6 : Number(opts.family) || 0;
        const usable = fam ? addresses.filter((a) => a.family === fam) : addresses;
        if (!usable.length) {
          const e = Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: 'ENOTFOUND', hostname }) as NodeJS.ErrnoException;
          return callback(e, opts.all ? [] : '');
        }
        if (opts.all) callback(null, usable);
        else callback(null, usable[0].address, usable[0].family);
      },
      (err: NodeJS.ErrnoException) => callback(err, opts.all ? [] : ''),
    );
  };
}

/**
 * The error a connection refused by policy fails with: the same code and message Node gives
 * for a closed port, so a caller probing hosts and ports through Backhaul cannot tell the two
 * apart. The reason is kept (non-enumerable) for the operator's logs.
 */
export function policyRefusedError(address: string, port: number, reason: string): NodeJS.ErrnoException {
  const e = new Error(`connect ECONNREFUSED ${address}:${port}`) as NodeJS.ErrnoException & { address: string; port: number };
  Object.assign(e, { errno: -111, code: 'ECONNREFUSED', syscall: 'connect', address, port });
  Object.defineProperty(e, 'policyReason', { value: reason, enumerable: false });
  return e;
}

export interface GuardedSocketOptions {
  host: string;
  port: number;
  denyPrivateNetworks: boolean;
}

/**
 * A TCP socket to `host:port` for a database driver, returned at once (drivers want a socket
 * synchronously; writes made while it connects are buffered). The host is resolved, every
 * address checked, and the socket connects to the checked addresses; a refused address fails
 * the socket with ECONNREFUSED exactly like a closed port (see policyRefusedError).
 * `socket.host` keeps the host name, which postgres.js uses as the TLS servername.
 */
export function guardedSocket(opts: GuardedSocketOptions): Socket & { host: string } {
  const bare = opts.host.replace(/^\[|\]$/g, '');
  const family = isIP(bare);
  if (family && !addressRefusal(bare, opts.denyPrivateNetworks)) {
    return Object.assign(netConnect({ host: bare, port: opts.port }), { host: opts.host });
  }
  const lookup = (_name: string, options: { all?: boolean; family?: number | string } | number, callback: LookupCallback) => {
    const all = typeof options === 'object' && options?.all;
    resolveChecked(bare, opts.denyPrivateNetworks).then(
      ({ addresses, refused }) => {
        if (refused) return callback(policyRefusedError(refused.address, opts.port, refused.reason), all ? [] : '');
        if (all) callback(null, addresses);
        else callback(null, addresses[0].address, addresses[0].family);
      },
      (err: NodeJS.ErrnoException) => callback(err, all ? [] : ''),
    );
  };
  // An IP literal skips Node's lookup: name it so the (refusing) lookup runs, like for a host name.
  const name = family ? 'refused.invalid' : bare;
  return Object.assign(netConnect({ host: name, port: opts.port, lookup: lookup as never }), { host: opts.host });
}
