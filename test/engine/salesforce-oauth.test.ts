import type { ChildProcess } from 'node:child_process';
import t from 'tap';
import postgres from 'postgres';
import { startFakeSalesforce, type FakeSalesforce } from '../fakes/salesforce.ts';
import { startTestBackhaul, type TestBackhaul } from '../helpers/backhaul.ts';
import { waitForRun } from '../helpers/sync-setup.ts';
import { kill9, spawnWorker } from '../chaos/helpers.ts';

// A Salesforce connection connected through the OAuth web server flow (start → the org's consent
// → our callback → tokens and instance_url sealed as secrets), then used by runs in worker
// processes: a session that expires mid-run (401 INVALID_SESSION_ID) is refreshed once and the
// refused requests are sent again; with eight batches in flight across two worker processes the
// org's token endpoint still sees exactly one refresh; a revoked refresh token fails the run with
// reauthorization_required. The fake org follows Salesforce's documented token endpoint (no
// expires_in, instance_url in the answer, no new refresh token on refresh).

const RETURN = 'https://app.example.com';
let h: TestBackhaul;
let sf: FakeSalesforce;
let db: postgres.Sql;
let sfEnv: Record<string, string>;
const workers: ChildProcess[] = [];

t.before(async () => {
  sf = await startFakeSalesforce();
  t.teardown(() => sf.close());
  sfEnv = {
    BACKHAUL_SALESFORCE_CLIENT_ID: sf.clientId,
    BACKHAUL_SALESFORCE_CLIENT_SECRET: sf.clientSecret,
    // The instance's Salesforce login endpoints (the fake org): Backhaul's client secret goes only there.
    BACKHAUL_SALESFORCE_AUTHORIZE_URL: `${sf.url}/services/oauth2/authorize`,
    BACKHAUL_SALESFORCE_TOKEN_URL: `${sf.url}/services/oauth2/token`,
  };
  // API only: runs execute in worker processes of their own.
  h = await startTestBackhaul(t, { env: { BACKHAUL_OAUTH_RETURN_ORIGINS: RETURN, ...sfEnv } });
  db = postgres(h.databaseUrl, { max: 2, onnotice: () => {} });
  t.teardown(() => db.end());
  t.teardown(() => Promise.all(workers.map(kill9)));
  await db`create schema src`;
  await db`create table src.contacts (id int primary key, ext text, last_name text)`;
  await db`insert into src.contacts select i, 'ext-' || i, 'Last ' || i from generate_series(1, 2600) i`;
  const u = new URL(h.databaseUrl);
  await ok(h.request('POST', '/v1/connections', { body: { slug: 'wh', name: 'Warehouse', type: 'postgres', config: { host: u.hostname, port: Number(u.port), database: u.pathname.slice(1), user: decodeURIComponent(u.username) }, secrets: { password: decodeURIComponent(u.password) } } }));
  // No instanceUrl: the token response names the instance.
  await ok(h.request('POST', '/v1/connections', { body: { slug: 'sf', name: 'Salesforce', type: 'salesforce', config: {} } }));
});

async function ok(p: Promise<{ status: number; body: any }>) {
  const r = await p;
  if (r.status >= 300) throw new Error(`${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

/** Follows the flow like a browser: the consent page redirects to our callback, which answers. */
async function consent(authorizationUrl: string): Promise<Response> {
  const atProvider = await fetch(authorizationUrl, { redirect: 'manual' });
  if (atProvider.status !== 302) throw new Error(`provider answered ${atProvider.status}: ${await atProvider.text()}`);
  return fetch(atProvider.headers.get('location')!, { redirect: 'manual' });
}

/** A sync of the model's rows `from`..`to` to Contact by External_Id__c, 200 rows a batch. */
async function contactSync(slug: string, from: number, to: number, concurrency: number): Promise<string> {
  const model = await ok(h.request('POST', '/v1/models', { body: { slug, name: slug, connectionId: 'wh', sql: `select id, ext, last_name from src.contacts where id between ${from} and ${to}`, primaryKey: 'id' } }));
  const sync = await ok(
    h.request('POST', '/v1/syncs', {
      body: {
        slug,
        name: slug,
        modelId: model.id,
        destinationId: 'sf',
        object: 'Contact',
        mode: 'upsert',
        matchKey: { sourceColumn: 'ext', destinationField: 'External_Id__c' },
        delivery: { batchSize: 200, concurrency, maxRetries: 3, maxRequestsPerSecond: 100 },
      },
    }),
  );
  await ok(
    h.request('PUT', `/v1/syncs/${sync.id}/mappings`, {
      body: [
        { destinationField: 'External_Id__c', source: { column: 'ext' } },
        { destinationField: 'LastName', source: { column: 'last_name' } },
      ],
    }),
  );
  return sync.id;
}

/** `node src/cli.ts worker` with one job at a time (so that two runs need two processes). */
function worker(): ChildProcess {
  const w = spawnWorker(h, h.databaseUrl, { ...sfEnv, BACKHAUL_WORKER_CONCURRENCY: '1' });
  workers.push(w);
  return w;
}

const isUpsert = (r: { method: string; path: string }) => r.method === 'PATCH' && r.path.startsWith('/composite/sobjects/Contact/');
const ids = (from: number, to: number) => sf.all('Contact').filter((c) => {
  const n = Number(String(c.External_Id__c).slice(4));
  return n >= from && n <= to;
}).length;

t.test('the OAuth web server flow connects a Salesforce connection; it is usable at once', async (t) => {
  t.equal((await h.request('GET', '/v1/connections/sf')).body.authStatus, 'not_connected');
  const start = await ok(h.request('POST', '/v1/connections/sf/oauth/start', { body: { returnUrl: `${RETURN}/crm` } }));
  const u = new URL(start.authorizationUrl);
  t.equal(`${u.origin}${u.pathname}`, `${sf.url}/services/oauth2/authorize`);
  t.same(
    { client_id: u.searchParams.get('client_id'), scope: u.searchParams.get('scope'), response_type: u.searchParams.get('response_type'), method: u.searchParams.get('code_challenge_method') },
    { client_id: sf.clientId, scope: 'api refresh_token', response_type: 'code', method: 'S256' },
  );
  const done = await consent(start.authorizationUrl);
  t.equal(done.status, 302, await done.clone().text());
  t.same(Object.fromEntries(new URL(done.headers.get('location')!).searchParams), { connection: 'sf', status: 'connected' });
  t.equal(sf.codeExchanges, 1, 'the code was exchanged with its PKCE verifier (the fake checks it)');

  const conn = (await h.request('GET', '/v1/connections/sf')).body;
  t.equal(conn.authStatus, 'connected');
  t.same(conn.secretNames, ['accessToken', 'instanceUrl', 'refreshToken'], 'instance_url kept; no expiry (Salesforce gives no expires_in)');
  const [row] = await db<{ secrets_sealed: string }[]>`select secrets_sealed from connections where slug = 'sf'`;
  const secrets = h.bh.services.deps.secrets.open(row.secrets_sealed) as Record<string, string>;
  t.equal(secrets.instanceUrl, sf.url, 'the instance is the one the token response named');

  const test = await h.request('POST', '/v1/connections/sf/test');
  t.same(test.body.ok, true, JSON.stringify(test.body));
  const fields = await ok(h.request('GET', '/v1/connections/sf/objects/Contact/fields'));
  t.match(fields.data.find((f: { name: string }) => f.name === 'External_Id__c'), { identifier: true });
  t.equal(sf.tokenRequests.refresh_token, 0, 'the token from the flow was used as is');
});

t.test('a session that expires mid-run: one refresh, the refused batches sent again, the run succeeds', async (t) => {
  const syncId = await contactSync('one', 1, 1000, 2);
  const before = { refreshes: sf.refreshes, requests: sf.tokenRequests.refresh_token };
  let upserts = 0;
  sf.onRequest = (r) => {
    // The session times out after the second batch's request.
    if (isUpsert(r) && ++upserts === 3) sf.expireTokens();
  };
  sf.log.length = 0;
  worker();
  const trig = await ok(h.request('POST', `/v1/syncs/${syncId}/runs`, { body: {} }));
  const run = await waitForRun(h, trig.id, 120_000);
  sf.onRequest = undefined;
  t.equal(run.status, 'succeeded', JSON.stringify(run.error));
  t.same(run.counts.succeeded, { insert: 1000, update: 0, delete: 0 });
  t.equal(ids(1, 1000), 1000, 'every row reached Salesforce once');
  t.equal(sf.tokenRequests.refresh_token - before.requests, 1, 'one refresh request reached the token endpoint');
  t.equal(sf.refreshes - before.refreshes, 1);
  const upsertLog = sf.log.filter((l) => l.method === 'PATCH');
  const refused = upsertLog.filter((l) => l.status === 401).length;
  t.ok(refused >= 1 && refused <= 2, `the batches in flight were refused with INVALID_SESSION_ID (${refused})`);
  t.equal(upsertLog.filter((l) => l.status === 200).length, 5, 'five batches accepted: each refused one was sent again once');
  const [{ n }] = await db<{ n: number }[]>`select count(*)::int as n from run_outcomes where run_id = ${run.id} and status = 'succeeded'`;
  t.equal(n, 1000);
});

t.test('a session that expires with eight batches in flight across two worker processes is refreshed exactly once', async (t) => {
  const a = await contactSync('a', 1001, 1800, 4);
  const b = await contactSync('b', 1801, 2600, 4);
  worker(); // a second process beside the first test's
  const before = { refreshes: sf.refreshes, requests: sf.tokenRequests.refresh_token };
  // Hold every batch until both runs have four in flight, then end the session and let them all through.
  const held: (() => void)[] = [];
  let holding = true;
  sf.gate = (r) =>
    !holding || !isUpsert(r)
      ? Promise.resolve()
      : new Promise<void>((release) => {
          held.push(release);
          if (held.length === 8) {
            holding = false;
            sf.expireTokens();
            for (const go of held) go();
          }
        });
  sf.log.length = 0;
  const runs = await Promise.all([a, b].map(async (id) => (await ok(h.request('POST', `/v1/syncs/${id}/runs`, { body: {} }))).id as string));
  const done = await Promise.all(runs.map((id) => waitForRun(h, id, 180_000)));
  sf.gate = undefined;
  for (const run of done) {
    t.equal(run.status, 'succeeded', JSON.stringify(run.error));
    t.same(run.counts.succeeded, { insert: 800, update: 0, delete: 0 });
  }
  const owners = await db<{ worker_id: string | null }[]>`select worker_id from runs where id in ${db(runs)}`;
  t.equal(new Set(owners.map((o) => o.worker_id)).size, 2, `the two runs ran in two worker processes (${JSON.stringify(owners)})`);
  t.equal(sf.log.filter((l) => l.method === 'PATCH' && l.status === 401).length, 8, 'all eight batches were refused with the expired session');
  t.equal(sf.tokenRequests.refresh_token - before.requests, 1, 'exactly one refresh request reached the token endpoint');
  t.equal(sf.refreshes - before.refreshes, 1);
  t.equal(sf.log.filter((l) => l.method === 'PATCH' && l.status === 200).length, 8, 'each batch was sent again once, with the new session');
  t.equal(ids(1001, 2600), 1600);
});

t.test('a revoked refresh token fails the run with reauthorization_required and flags the connection', async (t) => {
  const [row] = await db<{ secrets_sealed: string }[]>`select secrets_sealed from connections where slug = 'sf'`;
  const secrets = h.bh.services.deps.secrets.open(row.secrets_sealed) as Record<string, string>;
  sf.revokeRefreshToken(secrets.refreshToken);
  sf.expireTokens();
  await db`update src.contacts set last_name = last_name || ' v2' where id = 1`;
  const trig = await ok(h.request('POST', '/v1/syncs/one/runs', { body: {} }));
  const run = await waitForRun(h, trig.id, 120_000);
  t.equal(run.status, 'failed');
  t.match(run.error, { code: 'reauthorization_required' });
  const conn = (await h.request('GET', '/v1/connections/sf')).body;
  t.equal(conn.authStatus, 'reauthorization_required');
  t.match(conn.authError, /invalid_grant/);
});
