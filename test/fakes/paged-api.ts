// A local REST API that lists records page by page in the three styles public APIs use, for the
// HTTP destination's lookups:
//   GET /cursor/users?limit=&after=     {"data":[…], "next_cursor": "…" | null}   (Slack/Stripe style cursor in the body)
//   GET /link/users?page=&per_page=     […] with `Link: <…?page=N>; rel="next"` (GitHub style, RFC 8288)
//   GET /page/users?page=&per_page=     {"items":[…]}, an empty page after the last (page numbers)
// Each accepts `email=` to filter (case-insensitive). Bearer auth when `token` is set.
import { createServer, type Server } from 'node:http';

export interface PagedUser {
  id: number;
  email: string;
  name: string;
}

export interface FakePagedApi {
  url: string;
  users: PagedUser[];
  pageSize: number;
  token?: string;
  /** Requests received (path + query). */
  requests: string[];
  /** When set, the Link header of /link points at this origin instead (to test host checks). */
  linkOrigin?: string;
  close(): Promise<void>;
}

export async function startFakePagedApi(users: PagedUser[], pageSize = 3): Promise<FakePagedApi> {
  const api: FakePagedApi = { url: '', users, pageSize, requests: [], close: async () => {} };
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    api.requests.push(url.pathname + url.search);
    const json = (status: number, body: unknown, headers: Record<string, string> = {}) => {
      res.writeHead(status, { 'content-type': 'application/json', ...headers });
      res.end(JSON.stringify(body));
    };
    if (api.token && req.headers.authorization !== `Bearer ${api.token}`) return json(401, { error: 'unauthorized' });
    const email = url.searchParams.get('email');
    const all = email ? api.users.filter((u) => u.email.toLowerCase() === email.toLowerCase()) : api.users;
    const size = Number(url.searchParams.get('per_page') ?? url.searchParams.get('limit') ?? api.pageSize) || api.pageSize;
    if (url.pathname === '/cursor/users') {
      const start = Number(url.searchParams.get('after') ?? 0);
      const page = all.slice(start, start + size);
      return json(200, { data: page, next_cursor: start + size < all.length ? String(start + size) : null });
    }
    if (url.pathname === '/link/users') {
      const n = Number(url.searchParams.get('page') ?? 1);
      const page = all.slice((n - 1) * size, n * size);
      const headers: Record<string, string> = {};
      if (n * size < all.length) {
        const next = new URL(`${api.linkOrigin ?? api.url}/link/users`);
        next.search = url.search;
        next.searchParams.set('page', String(n + 1));
        headers.link = `<${next}>; rel="next", <${api.url}/link/users?page=1>; rel="first"`;
      }
      return json(200, page, headers);
    }
    if (url.pathname === '/page/users') {
      const n = Number(url.searchParams.get('page') ?? 1);
      return json(200, { items: all.slice((n - 1) * size, n * size) });
    }
    json(404, { error: 'not found' });
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => {
      api.url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
      api.close = () => new Promise((r) => server.close(() => r()));
      resolve(api);
    }),
  );
}
