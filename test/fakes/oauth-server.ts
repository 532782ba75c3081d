// A local OAuth 2.0 authorization server, following RFC 6749 (authorization code and refresh
// token grants, §4.1 and §6, error responses §5.2) and RFC 7636 (PKCE, S256), with the HubSpot
// specifics Backhaul relies on (https://developers.hubspot.com/docs/api-reference/auth-oauth-v3/guide):
//   GET  /oauth/authorize   consent: redirects at once to redirect_uri with ?code&state (or
//                           ?error=access_denied when `deny` is set), as a user who approves would
//   POST /oauth/v3/token    form body; client_id/client_secret in the body (HubSpot v3) or HTTP Basic;
//                           answers {token_type:"bearer", access_token, refresh_token, expires_in}
// Checks: the client's id and secret; codes are single use, expire after 5 minutes, are bound to
// their redirect_uri and to the PKCE challenge (the verifier must hash to it); refresh tokens are
// ROTATED on use when `rotateRefreshTokens` (the old one then fails with invalid_grant, as providers
// that rotate do) and can be revoked. It counts refreshes and code exchanges, and lets a test hold a
// refresh before answering. Access tokens expire after `accessTokenTtlSeconds` (HubSpot: 1800).
// Not covered: scopes are recorded, not enforced; no token introspection/revocation endpoints.
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';

export interface FakeOAuthOptions {
  clientId?: string;
  clientSecret?: string;
  accessTokenTtlSeconds?: number;
  rotateRefreshTokens?: boolean;
  /** Error body style for a bad refresh token: RFC 6749 `invalid_grant`, or HubSpot's `BAD_REFRESH_TOKEN`. */
  errorStyle?: 'rfc' | 'hubspot';
}

export interface FakeOAuthServer {
  url: string;
  authorizeUrl: string;
  tokenUrl: string;
  clientId: string;
  clientSecret: string;
  /** Successful refresh_token grants. */
  refreshes: number;
  /** refresh_token grant requests received (including refused ones). */
  refreshRequests: number;
  codeExchanges: number;
  /** The authorize requests' query parameters, in order. */
  authorizeRequests: URLSearchParams[];
  /** Answer the consent with error=access_denied. */
  deny: boolean;
  /** Awaited before answering a refresh_token grant (tests hold it to force contention). */
  beforeRefresh?: () => Promise<void>;
  /** Whether an access token is currently valid (for fake APIs' 401s). */
  isValid(accessToken: string): boolean;
  /** Issues a token pair as if a flow had completed (for seeding a connection). */
  issue(): { accessToken: string; refreshToken: string; expiresIn: number };
  revokeRefreshToken(token: string): void;
  /** Makes every access token issued so far invalid (as if they expired early). */
  expireAccessTokens(): void;
  close(): Promise<void>;
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

const b64url = (b: Buffer) => b.toString('base64url');

export async function startFakeOAuthServer(opts: FakeOAuthOptions = {}): Promise<FakeOAuthServer> {
  const codes = new Map<string, { redirectUri: string; challenge?: string; method?: string; expires: number; clientId: string }>();
  const refreshTokens = new Set<string>();
  const accessTokens = new Map<string, number>(); // token → expiry (ms)
  const ttl = opts.accessTokenTtlSeconds ?? 1800;
  let n = 0;
  const fresh = (kind: string) => `${kind}-${++n}-${b64url(randomBytes(9))}`;

  const issue = () => {
    const accessToken = fresh('at');
    const refreshToken = fresh('rt');
    accessTokens.set(accessToken, Date.now() + ttl * 1000);
    refreshTokens.add(refreshToken);
    return { accessToken, refreshToken, expiresIn: ttl };
  };

  const fake: FakeOAuthServer = {
    url: '',
    authorizeUrl: '',
    tokenUrl: '',
    clientId: opts.clientId ?? 'fake-client-id',
    clientSecret: opts.clientSecret ?? 'fake-client-secret',
    refreshes: 0,
    refreshRequests: 0,
    codeExchanges: 0,
    authorizeRequests: [],
    deny: false,
    isValid: (t) => (accessTokens.get(t) ?? 0) > Date.now(),
    issue,
    revokeRefreshToken: (t) => void refreshTokens.delete(t),
    expireAccessTokens: () => {
      for (const k of accessTokens.keys()) accessTokens.set(k, 0);
    },
    close: async () => {},
  };

  const server: Server = createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const json = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json;charset=utf-8', 'cache-control': 'no-store' });
      res.end(JSON.stringify(body));
    };
    if (req.method === 'GET' && url.pathname === '/oauth/authorize') {
      const q = url.searchParams;
      fake.authorizeRequests.push(q);
      const redirect = q.get('redirect_uri');
      if (q.get('client_id') !== fake.clientId || !redirect) return json(400, { error: 'invalid_request', error_description: 'unknown client_id or no redirect_uri' });
      const back = new URL(redirect);
      if (q.get('state')) back.searchParams.set('state', q.get('state')!);
      if (fake.deny) back.searchParams.set('error', 'access_denied');
      else {
        const code = fresh('code');
        codes.set(code, { redirectUri: redirect, challenge: q.get('code_challenge') ?? undefined, method: q.get('code_challenge_method') ?? undefined, expires: Date.now() + 300_000, clientId: fake.clientId });
        back.searchParams.set('code', code);
      }
      res.writeHead(302, { location: back.toString() });
      return res.end();
    }
    if (req.method === 'POST' && url.pathname === '/oauth/v3/token') {
      const form = new URLSearchParams(await readBody(req));
      let id = form.get('client_id');
      let secret = form.get('client_secret');
      const basic = /^Basic (.+)$/.exec(req.headers.authorization ?? '');
      if (basic) [id, secret] = Buffer.from(basic[1], 'base64').toString('utf8').split(':').map(decodeURIComponent);
      if (id !== fake.clientId || secret !== fake.clientSecret) return json(401, { error: 'invalid_client', error_description: 'client authentication failed' });
      const grant = form.get('grant_type');
      if (grant === 'authorization_code') {
        const code = codes.get(form.get('code') ?? '');
        codes.delete(form.get('code') ?? ''); // single use
        if (!code || code.expires < Date.now()) return json(400, { error: 'invalid_grant', error_description: 'unknown, used or expired code' });
        if (code.redirectUri !== form.get('redirect_uri')) return json(400, { error: 'invalid_grant', error_description: 'redirect_uri does not match' });
        if (code.challenge) {
          const verifier = form.get('code_verifier') ?? '';
          const computed = code.method === 'S256' ? b64url(createHash('sha256').update(verifier).digest()) : verifier;
          if (computed !== code.challenge) return json(400, { error: 'invalid_grant', error_description: 'PKCE verification failed' });
        }
        fake.codeExchanges++;
        const t = issue();
        return json(200, { token_type: 'bearer', access_token: t.accessToken, refresh_token: t.refreshToken, expires_in: t.expiresIn });
      }
      if (grant === 'refresh_token') {
        fake.refreshRequests++;
        await fake.beforeRefresh?.();
        const rt = form.get('refresh_token') ?? '';
        if (!refreshTokens.has(rt)) {
          return opts.errorStyle === 'hubspot'
            ? json(400, { status: 'BAD_REFRESH_TOKEN', message: 'missing or unknown refresh token' })
            : json(400, { error: 'invalid_grant', error_description: 'refresh token is invalid, revoked or already used' });
        }
        fake.refreshes++;
        const accessToken = fresh('at');
        accessTokens.set(accessToken, Date.now() + ttl * 1000);
        let refreshToken = rt;
        if (opts.rotateRefreshTokens) {
          refreshTokens.delete(rt);
          refreshToken = fresh('rt');
          refreshTokens.add(refreshToken);
        }
        return json(200, { token_type: 'bearer', access_token: accessToken, refresh_token: refreshToken, expires_in: ttl });
      }
      return json(400, { error: 'unsupported_grant_type' });
    }
    json(404, { error: 'not_found' });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  fake.url = `http://127.0.0.1:${port}`;
  fake.authorizeUrl = `${fake.url}/oauth/authorize`;
  fake.tokenUrl = `${fake.url}/oauth/v3/token`;
  fake.close = () => new Promise((r) => server.close(() => r()));
  return fake;
}
