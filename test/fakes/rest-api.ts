// A local stand-in for a typical SaaS REST API (contacts), for the HTTP destination tests.
// It records every request and follows common public API conventions: 201 + id on create,
// 422 with a message for a bad record, 207 Multi-Status batch results, a strict batch endpoint
// that refuses the whole request with 400, 404 for a missing record, 429 with Retry-After,
// and an OAuth2 client-credentials token endpoint whose tokens expire.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';

export interface Recorded {
  method: string;
  path: string;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  json?: unknown;
}

export interface Canned {
  status: number;
  headers?: Record<string, string>;
  body?: unknown;
  /** Raw body bytes (e.g. an oversized response); takes precedence over `body`. */
  raw?: Buffer;
  delayMs?: number;
  /**
   * Answer with the request echoed back in the body, as some APIs do in their errors: the
   * message quotes every request header, and `request` repeats the headers and the raw body.
   */
  echo?: boolean;
  /** Only for requests whose path starts with this (default: any API request). */
  pathPrefix?: string;
}

export interface FakeApi {
  url: string;
  requests: Recorded[];
  contacts: Map<string, Record<string, unknown>>;
  /** Responses served (in order) instead of the normal behaviour. */
  canned: Canned[];
  /** Require `Authorization: Bearer <issued token>` on /api routes. */
  requireOAuth: boolean;
  tokenTtlSeconds: number;
  tokensIssued: number;
  /** Invalidate every issued token (the server "rotated" them): the next API call gets 401. */
  revokeTokens(): void;
  clientId: string;
  clientSecret: string;
  close(): Promise<void>;
}

const invalid = (c: Record<string, unknown>) => (typeof c.email !== 'string' || !c.email.includes('@') ? `email "${c.email ?? ''}" is invalid` : undefined);

export async function startFakeApi(): Promise<FakeApi> {
  const tokens = new Map<string, number>(); // token → expiry (ms)
  let nextId = 1;
  const api: FakeApi = {
    url: '',
    requests: [],
    contacts: new Map(),
    canned: [],
    requireOAuth: false,
    tokenTtlSeconds: 3600,
    tokensIssued: 0,
    revokeTokens: () => tokens.clear(),
    clientId: 'bh-client',
    clientSecret: 's3cr3t-client',
    close: async () => {},
  };

  const send = (res: ServerResponse, status: number, body?: unknown, headers: Record<string, string> = {}) => {
    const text = body === undefined ? '' : JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', ...headers });
    res.end(text);
  };

  const create = (c: Record<string, unknown>) => {
    const id = String(nextId++);
    api.contacts.set(id, { ...c, id });
    return id;
  };

  const handle = async (req: IncomingMessage, res: ServerResponse, body: string) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const rec: Recorded = { method: req.method ?? '', path: url.pathname + url.search, headers: req.headers, body, json: body ? safeJson(body) : undefined };
    api.requests.push(rec);

    if (url.pathname === '/oauth/token') {
      const [user, pass] = Buffer.from(String(req.headers.authorization ?? '').replace(/^Basic /, ''), 'base64').toString().split(':');
      const form = new URLSearchParams(body);
      const id = user ? decodeURIComponent(user) : form.get('client_id');
      const secret = pass ? decodeURIComponent(pass) : form.get('client_secret');
      if (form.get('grant_type') !== 'client_credentials') return send(res, 400, { error: 'unsupported_grant_type' });
      if (id !== api.clientId || secret !== api.clientSecret) return send(res, 401, { error: 'invalid_client', error_description: 'Client authentication failed' });
      const token = `tok_${++api.tokensIssued}`;
      tokens.set(token, Date.now() + api.tokenTtlSeconds * 1000);
      return send(res, 200, { access_token: token, token_type: 'Bearer', expires_in: api.tokenTtlSeconds, scope: form.get('scope') ?? '' });
    }

    const canned = api.canned.findIndex((c) => !c.pathPrefix || url.pathname.startsWith(c.pathPrefix));
    if (canned >= 0) {
      const [c] = api.canned.splice(canned, 1);
      if (c.delayMs) await new Promise((r) => setTimeout(r, c.delayMs));
      if (res.destroyed) return;
      if (c.echo) return send(res, c.status, { message: `refused request with headers ${JSON.stringify(req.headers)}`, request: { headers: req.headers, body } }, c.headers);
      if (c.raw) {
        res.writeHead(c.status, { 'content-type': 'application/json', ...c.headers });
        return res.end(c.raw);
      }
      return send(res, c.status, c.body, c.headers);
    }

    if (api.requireOAuth && url.pathname.startsWith('/api')) {
      const token = String(req.headers.authorization ?? '').replace(/^Bearer /, '');
      const exp = tokens.get(token);
      if (!exp || exp < Date.now()) return send(res, 401, { message: 'token expired or invalid' });
    }

    const json = rec.json as Record<string, unknown> | Record<string, unknown>[] | undefined;
    const m = /^\/api\/contacts(?:\/([^/]+))?$/.exec(url.pathname);
    if (m && !m[1] && req.method === 'POST') {
      const c = json as Record<string, unknown>;
      const why = invalid(c);
      if (why) return send(res, 422, { message: why });
      return send(res, 201, { id: create(c) });
    }
    if (m && m[1] && m[1] !== 'batch' && m[1] !== 'batch-strict') {
      const key = decodeURIComponent(m[1]);
      const found = [...api.contacts.values()].find((c) => c.id === key || c.email === key);
      if (!found) return send(res, 404, { message: `contact ${key} not found` });
      if (req.method === 'DELETE') {
        api.contacts.delete(String(found.id));
        return send(res, 204);
      }
      Object.assign(found, json);
      return send(res, 200, { id: found.id });
    }
    if (url.pathname === '/api/contacts/batch' && req.method === 'POST') {
      const inputs = (json as { inputs: Record<string, unknown>[] }).inputs;
      const results = inputs.map((c) => {
        const why = invalid(c);
        return why ? { status: 422, error: why } : { status: 201, id: create(c) };
      });
      return send(res, 207, { results });
    }
    if (url.pathname === '/api/contacts/batch-strict' && req.method === 'POST') {
      const inputs = json as Record<string, unknown>[];
      const bad = inputs.findIndex((c) => invalid(c));
      if (bad >= 0) return send(res, 400, { error: { message: `record ${bad}: ${invalid(inputs[bad])}` } });
      return send(res, 200, { data: inputs.map((c) => ({ ok: true, id: create(c) })) });
    }
    return send(res, 404, { message: `no route ${req.method} ${url.pathname}` });
  };

  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => void handle(req, res, Buffer.concat(chunks).toString('utf8')));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  api.url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  api.close = () => new Promise((r) => {
    server.closeAllConnections();
    server.close(() => r());
  });
  return api;
}

function safeJson(s: string): unknown {
  try {
    return JSON.parse(s);
  } catch {
    return undefined;
  }
}
