import { BlockList, isIP } from 'node:net';
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { ConnectorError } from '../errors.ts';

// Outbound address guard (DESIGN §7). Checked on the addresses DNS returned, and the socket
// connects to exactly the address that was checked (see guardedLookup), so a name that
// re-resolves between check and connect (DNS rebinding) cannot slip through.

const ALWAYS = new BlockList();
ALWAYS.addSubnet('169.254.0.0', 16, 'ipv4'); // link-local, cloud metadata (169.254.169.254)
ALWAYS.addSubnet('fe80::', 10, 'ipv6'); // link-local
ALWAYS.addAddress('fd00:ec2::254', 'ipv6'); // AWS metadata over IPv6

const PRIVATE = new BlockList();
PRIVATE.addSubnet('127.0.0.0', 8, 'ipv4');
PRIVATE.addSubnet('10.0.0.0', 8, 'ipv4');
PRIVATE.addSubnet('172.16.0.0', 12, 'ipv4');
PRIVATE.addSubnet('192.168.0.0', 16, 'ipv4');
PRIVATE.addSubnet('0.0.0.0', 8, 'ipv4'); // "this host": 0.0.0.0 reaches loopback
PRIVATE.addSubnet('100.64.0.0', 10, 'ipv4'); // carrier-grade NAT, internal in most clouds
PRIVATE.addAddress('::1', 'ipv6');
PRIVATE.addAddress('::', 'ipv6');
PRIVATE.addSubnet('fc00::', 7, 'ipv6'); // unique local

/** Expands an IPv6 address to 8 numbers (undefined if malformed). */
function hextets(ip: string): number[] | undefined {
  let s = ip;
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (v4) {
    const p = v4[1].split('.').map(Number);
    s = `${s.slice(0, -v4[1].length)}${((p[0] << 8) | p[1]).toString(16)}:${((p[2] << 8) | p[3]).toString(16)}`;
  }
  const [head, tail] = s.split('::');
  const h = head ? head.split(':') : [];
  const t = tail !== undefined ? (tail ? tail.split(':') : []) : [];
  const fill = tail !== undefined ? 8 - h.length - t.length : 0;
  const all = [...h, ...Array(Math.max(0, fill)).fill('0'), ...t].map((x) => parseInt(x, 16));
  return all.length === 8 && all.every((x) => x >= 0 && x <= 0xffff) ? all : undefined;
}

/** The IPv4 address embedded in an IPv4-mapped (::ffff:a.b.c.d) or NAT64 (64:ff9b::/96) IPv6 address. */
function embeddedIpv4(ip: string): string | undefined {
  const h = hextets(ip);
  if (!h) return undefined;
  const mapped = h.slice(0, 5).every((x) => x === 0) && h[5] === 0xffff;
  const nat64 = h[0] === 0x64 && h[1] === 0xff9b && h.slice(2, 6).every((x) => x === 0);
  if (!mapped && !nat64) return undefined;
  return [h[6] >> 8, h[6] & 255, h[7] >> 8, h[7] & 255].join('.');
}

/** Why an address may not be contacted, or undefined when it may. */
export function addressRefusal(address: string, denyPrivateNetworks: boolean): string | undefined {
  let ip = address.replace(/^\[|\]$/g, '').replace(/%.*$/, '');
  let family = isIP(ip);
  if (family === 0) return `"${address}" is not an IP address`;
  if (family === 6) {
    const v4 = embeddedIpv4(ip);
    if (v4) {
      ip = v4;
      family = 4;
    }
  }
  const type = family === 4 ? 'ipv4' : 'ipv6';
  if (ALWAYS.check(ip, type)) return `${address} is a link-local or cloud metadata address`;
  if (denyPrivateNetworks && PRIVATE.check(ip, type)) return `${address} is a loopback or private address and private networks are denied`;
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

/** Resolves `host` and checks every address it resolves to (all must be allowed). */
export function resolveAllowed(host: string, denyPrivateNetworks: boolean): Promise<LookupAddress[]> {
  const bare = host.replace(/^\[|\]$/g, '');
  if (isIP(bare)) {
    const reason = addressRefusal(bare, denyPrivateNetworks);
    if (reason) return Promise.reject(addressNotAllowed(host, reason));
    return Promise.resolve([{ address: bare, family: isIP(bare) }]);
  }
  return new Promise((resolve, reject) => {
    dnsLookup(bare, { all: true, verbatim: true }, (err, addresses) => {
      if (err) return reject(err);
      for (const a of addresses) {
        const reason = addressRefusal(a.address, denyPrivateNetworks);
        if (reason) return reject(addressNotAllowed(host, reason));
      }
      resolve(addresses);
    });
  });
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
