import http from 'node:http';
import https from 'node:https';
import { isIP } from 'node:net';
import { ConnectorError } from '../errors.ts';
import { assertAddressAllowed, guardedLookup } from './address-guard.ts';
import { safeOrigin } from './redact.ts';

// Outbound HTTP for destinations, webhooks and alerts. Built on node:http/https rather than
// fetch: a per-request `lookup` is the simplest way to connect to exactly the address the guard
// checked, and reading the body ourselves lets us stop at the size limit. Redirects are not
// followed (a redirect could lead past the guard); callers see the 3xx.

export interface HttpRequestOptions {
  method: string;
  url: string | URL;
  headers?: Record<string, string>;
  body?: string | Buffer;
  /** Whole-exchange deadline: connect, send, and read the full response. */
  timeoutMs: number;
  maxResponseBytes: number;
  denyPrivateNetworks: boolean;
  signal?: AbortSignal;
  /**
   * The URL is itself a credential (a Slack incoming webhook): errors name its origin only,
   * never its path.
   */
  secretUrl?: boolean;
  /** The byte budget the response body is read under (default: the process-wide responseBudget). */
  budget?: ByteBudget;
}

/** No response body is read past this many bytes, whatever a connection asks for (10 MiB). */
export const MAX_RESPONSE_BYTES = 10 * 1024 * 1024;
/** Default total of response bytes being read at once in one process (64 MiB). */
export const DEFAULT_RESPONSE_BUDGET_BYTES = 64 * 1024 * 1024;

/**
 * A byte budget shared by concurrent readers: each response takes its bytes as they arrive and
 * gives them back when its request settles. A response that would overdraw it is aborted (that
 * request fails, retryably), so a burst of large responses across syncs, rows, webhooks and alerts
 * cannot take the process's memory with it.
 */
export class ByteBudget {
  readonly capacity: number;
  #used = 0;
  #peak = 0;
  constructor(capacity: number) {
    if (!(capacity > 0)) throw new RangeError('a byte budget needs a positive capacity');
    this.capacity = capacity;
  }
  /** Bytes held right now. */
  get used(): number {
    return this.#used;
  }
  /** The most bytes ever held at once (for tests and metrics). */
  get peak(): number {
    return this.#peak;
  }
  /** Takes n bytes if they fit; false (and nothing taken) otherwise. */
  tryTake(n: number): boolean {
    if (this.#used + n > this.capacity) return false;
    this.#used += n;
    if (this.#used > this.#peak) this.#peak = this.#used;
    return true;
  }
  give(n: number): void {
    this.#used = Math.max(0, this.#used - n);
  }
}

/** The process-wide budget of response bytes in flight (destinations, webhooks, alerts). */
export let responseBudget = new ByteBudget(DEFAULT_RESPONSE_BUDGET_BYTES);

/** Replaces the process-wide response budget (start-up configuration; in-flight reads keep the old one). */
export function setResponseBudget(bytes: number): void {
  responseBudget = new ByteBudget(bytes);
}

export interface HttpResponse {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
  durationMs: number;
}

// Separate pools per guard setting: a socket opened under a laxer rule is never reused under a stricter one.
const agents = new Map<boolean, { http: http.Agent; https: https.Agent }>();
function agentsFor(deny: boolean) {
  let a = agents.get(deny);
  if (!a) {
    const opts = { keepAlive: true, maxSockets: 64, lookup: guardedLookup(deny) } as http.AgentOptions;
    agents.set(deny, (a = { http: new http.Agent(opts), https: new https.Agent(opts) }));
  }
  return a;
}

const NETWORK: Record<string, [string, 'fatal' | 'retryable', string, string]> = {
  ENOTFOUND: ['dns_not_found', 'fatal', 'The host name could not be resolved', 'Check the URL\'s host name.'],
  EAI_AGAIN: ['dns_not_found', 'retryable', 'The host name could not be resolved (temporary DNS failure)', 'Check the URL\'s host name and the DNS of the Backhaul server.'],
  ECONNREFUSED: ['connection_refused', 'retryable', 'The server refused the connection', 'Check the URL\'s host and port, and that the service is up.'],
  EHOSTUNREACH: ['connection_refused', 'retryable', 'The host is unreachable', 'Check the URL and the network route from the Backhaul server.'],
  ENETUNREACH: ['connection_refused', 'retryable', 'The network is unreachable', 'Check the URL and the network route from the Backhaul server.'],
  ECONNRESET: ['connection_reset', 'retryable', 'The connection was reset', 'The server or a proxy closed the connection; the request will be retried.'],
  EPIPE: ['connection_reset', 'retryable', 'The connection was closed while sending', 'The server or a proxy closed the connection; the request will be retried.'],
  ETIMEDOUT: ['connection_timeout', 'retryable', 'Connecting timed out', 'Check that a firewall allows the Backhaul server to reach the host.'],
};

/** Translates a socket/TLS error into a ConnectorError. */
export function httpNetworkError(e: unknown, url: string): ConnectorError {
  if (e instanceof ConnectorError) return e;
  const err = e as NodeJS.ErrnoException;
  const code = err?.code ?? '';
  const n = NETWORK[code];
  if (n) return new ConnectorError(n[0], `${n[2]} (${url}): ${err.message}`, { classification: n[1], hint: n[3], cause: e });
  if (/^(ERR_TLS_|ERR_SSL_|CERT_|UNABLE_TO_|DEPTH_ZERO|SELF_SIGNED)/.test(code) || /certificate|ssl|tls/i.test(err?.message ?? '')) {
    return new ConnectorError('tls_error', `TLS failed (${url}): ${err.message}`, { classification: 'fatal', hint: 'The server\'s certificate is not trusted or TLS is misconfigured: check the URL (http vs https) and the certificate.', cause: e });
  }
  if (code === 'ECONNABORTED' || err?.message === 'socket hang up') {
    return new ConnectorError('connection_reset', `The connection was closed (${url}): ${err.message}`, { classification: 'retryable', hint: 'The request will be retried.', cause: e });
  }
  return new ConnectorError('network_error', `Request failed (${url}): ${err?.message ?? String(e)}`, { classification: 'retryable', hint: 'The request will be retried.', cause: e });
}

export function httpRequest(opts: HttpRequestOptions): Promise<HttpResponse> {
  const url = typeof opts.url === 'string' ? new URL(opts.url) : opts.url;
  const shown = opts.secretUrl ? safeOrigin(url) : `${url.origin}${url.pathname}`;
  const maxBytes = Math.min(opts.maxResponseBytes, MAX_RESPONSE_BYTES);
  const budget = opts.budget ?? responseBudget;
  let held = 0;
  const release = () => {
    budget.give(held);
    held = 0;
  };
  const started = Date.now();
  return new Promise<HttpResponse>((resolve, reject) => {
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      return reject(new ConnectorError('invalid_url', `Only http and https URLs are allowed, not ${url.protocol}`, { classification: 'fatal', status: 400 }));
    }
    // Node does not call `lookup` for IP literals: check those here.
    const literal = url.hostname.replace(/^\[|\]$/g, '');
    if (isIP(literal)) {
      try {
        assertAddressAllowed(literal, opts.denyPrivateNetworks, url.host);
      } catch (e) {
        return reject(e);
      }
    }
    if (opts.signal?.aborted) return reject(aborted(shown));
    const mod = url.protocol === 'https:' ? https : http;
    const a = agentsFor(opts.denyPrivateNetworks);
    const body = opts.body === undefined ? undefined : Buffer.isBuffer(opts.body) ? opts.body : Buffer.from(opts.body);
    const headers: Record<string, string> = { ...opts.headers };
    if (body && !Object.keys(headers).some((h) => h.toLowerCase() === 'content-length')) headers['content-length'] = String(body.length);
    let settled = false;
    const fail = (e: unknown) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      req.destroy();
      release();
      reject(httpNetworkError(e, shown));
    };
    const req = mod.request(url, {
      method: opts.method,
      headers,
      agent: url.protocol === 'https:' ? a.https : a.http,
      lookup: guardedLookup(opts.denyPrivateNetworks) as never,
    });
    const timer = setTimeout(() => {
      fail(new ConnectorError('request_timeout', `No complete response within ${opts.timeoutMs} ms (${shown}).`, {
        classification: 'retryable',
        hint: 'The server is slow or unreachable; the request will be retried. Raise timeoutMs if it is legitimately slow.',
      }));
    }, opts.timeoutMs);
    const onAbort = () => fail(aborted(shown));
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    req.on('error', fail);
    req.on('response', (res) => {
      const declared = Number(res.headers['content-length']);
      if (declared > maxBytes) return fail(tooLarge(shown, maxBytes));
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        if (settled) return;
        size += c.length;
        if (size > maxBytes) return fail(tooLarge(shown, maxBytes));
        if (!budget.tryTake(c.length)) return fail(overBudget(shown, budget.capacity));
        held += c.length;
        chunks.push(c);
      });
      res.on('error', fail);
      res.on('end', () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        opts.signal?.removeEventListener('abort', onAbort);
        release();
        const h: Record<string, string> = {};
        for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) h[k] = Array.isArray(v) ? v.join(', ') : v;
        resolve({ status: res.statusCode ?? 0, headers: h, body: Buffer.concat(chunks), durationMs: Date.now() - started });
      });
    });
    req.end(body);
  });
}

function tooLarge(url: string, max: number): ConnectorError {
  return new ConnectorError('response_too_large', `The response from ${url} exceeded ${max} bytes and was aborted.`, {
    classification: 'fatal',
    hint: `Raise maxResponseBytes on the connection (at most ${MAX_RESPONSE_BYTES} bytes) if such responses are expected.`,
  });
}

function overBudget(url: string, capacity: number): ConnectorError {
  return new ConnectorError('response_budget_exceeded', `The response from ${url} was aborted: this process is already reading ${capacity} bytes of responses at once.`, {
    classification: 'retryable',
    hint: 'Many large responses arrived at the same time; the request will be retried. Lower the sync\'s concurrency or the destination\'s response sizes if this persists.',
  });
}

function aborted(url: string): ConnectorError {
  return new ConnectorError('cancelled', `The request to ${url} was cancelled.`, { classification: 'fatal' });
}

/** Milliseconds from a Retry-After header (delta seconds or HTTP date), undefined when absent/invalid. */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | undefined {
  if (!value) return undefined;
  const v = value.trim();
  if (/^\d+(\.\d+)?$/.test(v)) return Math.round(Number(v) * 1000);
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}
