import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import t from 'tap';
import postgres from 'postgres';
import { startTestBackhaul, type TestBackhaul } from '../helpers/backhaul.ts';
import { startFakeOAuthServer, type FakeOAuthServer } from '../fakes/oauth-server.ts';
import type { OAuthClient } from '../../src/connectors/oauth/protocol.ts';
import { ConnectorError } from '../../src/errors.ts';

// The OAuth token manager against the real control database and a second node process: one
// refresh per connection at a time across processes, re-reading the stored tokens after waiting,
// so that a provider that rotates refresh tokens never sees the old one twice.

const key = randomBytes(32).toString('base64');
let h: TestBackhaul;
let db: postgres.Sql;
let fake: FakeOAuthServer;
let client: OAuthClient;

t.before(async () => {
  h = await startTestBackhaul(t, { env: { BACKHAUL_ENCRYPTION_KEY: key } });
  db = postgres(h.databaseUrl, { max: 2, onnotice: () => {} });
  t.teardown(() => db.end());
  fake = await startFakeOAuthServer({ rotateRefreshTokens: true });
  t.teardown(() => fake.close());
  client = {
    provider: 'hubspot',
    authorizeUrl: fake.authorizeUrl,
    tokenUrl: fake.tokenUrl,
    clientId: fake.clientId,
    clientSecret: fake.clientSecret,
    scopes: [],
    clientAuth: 'body',
  };
});

let seq = 0;
/** A connection row holding OAuth tokens (written as the OAuth flow would). */
async function seedConnection(tokens: { accessToken: string; refreshToken: string; expiresAt: Date }): Promise<string> {
  const id = `conn_oauthtest${++seq}`;
  const [ws] = await db<{ id: string }[]>`select id from workspaces where slug = 'default'`;
  const secrets = { accessToken: tokens.accessToken, refreshToken: tokens.refreshToken, accessTokenExpiresAt: tokens.expiresAt.toISOString() };
  await db`insert into connections (id, workspace_id, slug, name, type, config, secrets_sealed, secret_names)
           values (${id}, ${ws.id}, ${`oauth-test-${seq}`}, 'OAuth test', 'hubspot', ${db.json({})}, ${h.bh.services.deps.secrets.seal(secrets)}, ${Object.keys(secrets)})`;
  return id;
}

async function stored(id: string): Promise<Record<string, unknown>> {
  const [row] = await db<{ secrets_sealed: string }[]>`select secrets_sealed from connections where id = ${id}`;
  return h.bh.services.deps.secrets.open(row.secrets_sealed);
}

/** Holds each refresh until the other process is blocked on the refresh lock (or has sent its own refresh). */
function holdUntilContended(): () => Promise<void> {
  return async () => {
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      if (fake.refreshRequests >= 2) return;
      const [{ n }] = await db<{ n: number }[]>`select count(*)::int as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`;
      if (n >= 1) return;
      await new Promise((r) => setTimeout(r, 20));
    }
  };
}

/** Starts the second process; resolves once it is ready, with a function that says "go" and waits for its answer. */
async function otherProcess(connectionId: string, refused: string[]): Promise<() => Promise<{ tokens?: string[]; error?: { code: string } }>> {
  const child = spawn(process.execPath, ['test/fixtures/oauth-token-callers.ts'], {
    env: { ...process.env, DATABASE_URL: h.databaseUrl, BACKHAUL_ENCRYPTION_KEY: key, CONNECTION_ID: connectionId, OAUTH_CLIENT: JSON.stringify(client), REFUSED: JSON.stringify(refused), CALLERS: '4' },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  t.teardown(() => void child.kill());
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  const first = await lines.next();
  if (first.value !== 'ready') throw new Error(`child said ${first.value}`);
  return async () => {
    child.stdin!.write('go\n');
    const answer = await lines.next();
    return JSON.parse(String(answer.value));
  };
}

async function localCallers(connectionId: string, refused: string[]): Promise<string[]> {
  const tokens = h.bh.services.connections.tokens;
  const conn = { id: connectionId, client: () => client };
  return Promise.all(
    Array.from({ length: 4 }, async () => {
      const first = await tokens.getAccessToken(conn);
      if (!refused.includes(first)) return first;
      tokens.invalidate(connectionId, first);
      return tokens.getAccessToken(conn);
    }),
  );
}

t.test('an expiring token with eight callers in two processes is refreshed exactly once', async (t) => {
  const seed = fake.issue();
  const id = await seedConnection({ accessToken: seed.accessToken, refreshToken: seed.refreshToken, expiresAt: new Date(Date.now() + 30_000) }); // inside the refresh margin
  const before = { refreshes: fake.refreshes, requests: fake.refreshRequests };
  fake.beforeRefresh = holdUntilContended();
  const go = await otherProcess(id, []);
  const [other, mine] = await Promise.all([go(), localCallers(id, [])]);
  fake.beforeRefresh = undefined;
  t.notOk(other.error, `the other process got tokens (${JSON.stringify(other.error)})`);
  const all = [...mine, ...other.tokens!];
  t.equal(all.length, 8);
  t.equal(new Set(all).size, 1, 'all eight callers hold the same token');
  t.not(all[0], seed.accessToken, 'a new token');
  t.ok(fake.isValid(all[0]), 'the provider accepts it');
  t.equal(fake.refreshRequests - before.requests, 1, 'one refresh request reached the provider');
  t.equal(fake.refreshes - before.refreshes, 1, 'one refresh');
  const s = await stored(id);
  t.equal(s.accessToken, all[0], 'the new token is stored');
  t.not(s.refreshToken, seed.refreshToken, 'the rotated refresh token is stored');
  t.ok(Date.parse(s.accessTokenExpiresAt as string) > Date.now() + 1_700_000, 'with its expiry (expires_in 1800 s)');
});

t.test('a token refused with 401 before its expiry, by callers in two processes, is refreshed exactly once', async (t) => {
  const seed = fake.issue();
  const id = await seedConnection({ accessToken: seed.accessToken, refreshToken: seed.refreshToken, expiresAt: new Date(Date.now() + 3_600_000) });
  const before = fake.refreshes;
  fake.beforeRefresh = holdUntilContended();
  const go = await otherProcess(id, [seed.accessToken]);
  const [other, mine] = await Promise.all([go(), localCallers(id, [seed.accessToken])]);
  fake.beforeRefresh = undefined;
  t.notOk(other.error, `the other process got tokens (${JSON.stringify(other.error)})`);
  const all = [...mine, ...other.tokens!];
  t.equal(new Set(all).size, 1, 'all eight callers hold the same new token');
  t.not(all[0], seed.accessToken);
  t.equal(fake.refreshes - before, 1, 'one refresh');
});

t.test('a revoked refresh token gives a fatal reauthorization_required and flags the connection', async (t) => {
  for (const style of ['rfc', 'hubspot'] as const) {
    const f = await startFakeOAuthServer({ rotateRefreshTokens: true, errorStyle: style });
    t.teardown(() => f.close());
    const seed = f.issue();
    f.revokeRefreshToken(seed.refreshToken);
    const id = await seedConnection({ accessToken: seed.accessToken, refreshToken: seed.refreshToken, expiresAt: new Date(Date.now() - 1000) });
    const c = { id, client: () => ({ ...client, tokenUrl: f.tokenUrl, authorizeUrl: f.authorizeUrl }) };
    const err = await h.bh.services.connections.tokens.getAccessToken(c).catch((e) => e);
    t.ok(err instanceof ConnectorError, style);
    t.equal(err.code, 'reauthorization_required', style);
    t.equal(err.classification, 'fatal', style);
    t.match(err.hint, /oauth\/start/, 'the hint says how to reconnect');
    const [row] = await db<{ auth_status: string; auth_error: string }[]>`select auth_status, auth_error from connections where id = ${id}`;
    t.equal(row.auth_status, 'reauthorization_required', style);
    t.match(row.auth_error, style === 'rfc' ? /invalid_grant/ : /BAD_REFRESH_TOKEN/);
    t.equal(f.refreshes, 0);
  }
});

t.test('a refresh that fails because the provider is down is retryable and flags nothing', async (t) => {
  const seed = fake.issue();
  const id = await seedConnection({ accessToken: seed.accessToken, refreshToken: seed.refreshToken, expiresAt: new Date(Date.now() - 1000) });
  const c = { id, client: () => ({ ...client, tokenUrl: 'http://127.0.0.1:9/oauth/v3/token' }) };
  const err = await h.bh.services.connections.tokens.getAccessToken(c).catch((e) => e);
  t.equal(err.classification, 'retryable');
  const [row] = await db<{ auth_status: string | null }[]>`select auth_status from connections where id = ${id}`;
  t.equal(row.auth_status, null);
  t.same((await stored(id)).refreshToken, seed.refreshToken, 'the refresh token is kept');
});
