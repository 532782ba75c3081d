import t from 'tap';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { startFakeApi } from '../fakes/rest-api.ts';
import { startReceiver } from '../fakes/receiver.ts';
import { controlDb } from '../helpers/http-fixtures.ts';
import { runToEnd, setupSync } from '../helpers/sync-setup.ts';

// End to end: a destination that echoes the request (headers and body) in its errors. The
// connection's secrets, in any encoding, and the live OAuth token must appear in none of: run
// records (stored and served), run errors, run.completed webhooks, the row debugger's stored
// exchanges, the logs.

const engine = { retryBaseMs: 5, retryMaxMs: 40, heartbeatMs: 200 };
const SECRET = 'Echo&Me/Pl3ase+"ü"-6c1d0e';
const b64 = (s: string) => Buffer.from(s).toString('base64');
/** Every string leaf of a value (keys included). */
function strings(v: unknown): string[] {
  if (typeof v === 'string') return [v];
  if (v instanceof Date || v === null || typeof v !== 'object') return [];
  if (Array.isArray(v)) return v.flatMap(strings);
  return Object.entries(v).flatMap(([k, x]) => [k, ...strings(x)]);
}
const forms = (s: string, user?: string) => [s, JSON.stringify(s).slice(1, -1), encodeURIComponent(s), b64(s), ...(user ? [b64(`${user}:${s}`)] : [])];

t.test('echoed secrets are redacted from everything stored or sent', async (t) => {
  const h = await startTestBackhaul(t, { start: { worker: true, engine } });
  const sql = controlDb(h);
  t.teardown(() => sql.end());
  const api = await startFakeApi();
  t.teardown(() => api.close());
  const hooks = await startReceiver();
  t.teardown(() => hooks.close());
  const ep = await h.request('POST', '/v1/webhook-endpoints', { body: { slug: 'runs', name: 'Runs', url: `${hooks.url}/hook`, events: ['run.completed'] } });
  t.equal(ep.status, 201, JSON.stringify(ep.body));

  const fields = [{ name: 'email', identifier: true }, { name: 'name' }, { name: 'age', type: 'integer' }];
  const rowOps = { upsert: { method: 'POST', path: '/contacts' } };
  const batchOps = { upsert: { method: 'POST', path: '/contacts/batch', mode: 'batch', batchKey: 'inputs', results: { pointer: '/results', statusField: 'status', errorField: 'error' } } };
  const cases = [
    { slug: 'hdr', auth: { type: 'header', headerName: 'X-Echo-Token' }, secrets: { headerValue: SECRET }, ops: rowOps, leaks: forms(SECRET) },
    { slug: 'basic', auth: { type: 'basic', username: 'svc' }, secrets: { password: SECRET }, ops: batchOps, leaks: forms(SECRET, 'svc') },
    { slug: 'oauth', auth: { type: 'oauth2_client_credentials', tokenUrl: `${api.url}/oauth/token`, clientId: api.clientId, clientAuth: 'body' }, secrets: { clientSecret: api.clientSecret }, ops: rowOps, leaks: forms(api.clientSecret) },
  ];
  let seeded = false;
  for (const c of cases) {
    await t.test(`${c.slug}: run records, webhooks, debugger`, async (t) => {
      api.requireOAuth = c.slug === 'oauth';
      const { syncId, destinationId } = await setupSync(t, h, api.url, { rows: seeded ? 0 : 4, slug: c.slug, delivery: { batchSize: 1, concurrency: 1, maxRetries: 0 } });
      seeded = true;
      const p = await h.request('PATCH', `/v1/connections/${destinationId}`, {
        body: { config: { baseUrl: `${api.url}/api`, auth: c.auth, objects: [{ name: 'contacts', fields, operations: c.ops }] }, secrets: c.secrets },
      });
      t.equal(p.status, 200, JSON.stringify(p.body));
      api.requests.length = 0;
      // Two rows are refused with an echo of the request; the others go through.
      api.canned.push({ status: 422, echo: true, pathPrefix: '/api/contacts' }, { status: 422, echo: true, pathPrefix: '/api/contacts' });
      const run = await runToEnd(h, syncId);
      t.equal(run.status, 'partially_succeeded', JSON.stringify(run));
      t.equal(run.counts.rejected.insert, 2);
      const tokens = api.requests.map((r) => String(r.headers.authorization ?? '')).filter((a) => a.startsWith('Bearer ')).map((a) => a.slice(7));
      if (c.slug === 'oauth') t.ok(tokens.length > 0, 'the live token was used');
      const leaks = [...c.leaks, ...tokens];

      const records = await h.request('GET', `/v1/runs/${run.id}/records?status=rejected`);
      t.equal(records.body.data.length, 2);
      t.match(records.body.data[0].error.message, /refused request with headers/);
      t.match(records.body.data[0].error.message, /\[REDACTED\]/);
      const one = await h.request('GET', `/v1/runs/${run.id}/records?primaryKey=${records.body.data[0].primaryKey}`);
      t.ok(one.body.data[0].exchanges.length >= 1, 'the debugger kept the exchange');
      t.match(one.body.data[0].exchanges[0].response.body, /REDACTED/);
      const delivered = await hooks.waitFor((all) => all.some((r) => r.body?.data?.run?.id === run.id));
      const event = delivered.find((r) => r.body?.data?.run?.id === run.id)!;
      t.equal(event.body.data.failedRows.length, 2);

      // Every string as stored or sent (parsed, so no second encoding hides an escaped form).
      const recs = await sql`select * from run_outcomes where run_id = ${run.id}`;
      const exs = await sql`select * from run_exchanges where run_id = ${run.id}`;
      const dels = await sql`select * from webhook_deliveries where run_id = ${run.id}`;
      const runRow = await sql`select * from runs where id = ${run.id}`;
      t.ok(recs.length > 0 && exs.length > 0 && dels.length > 0);
      const places: [string, string[]][] = [
        ['run_records', strings(recs)],
        ['run_exchanges', strings(exs)],
        ['webhook_deliveries', [...strings(dels), ...dels.flatMap((d) => strings(JSON.parse(d.body)))]],
        ['runs', strings(runRow)],
        ['GET records', [...strings(records.body), ...strings(one.body)]],
        ['webhook body', [event.raw, ...strings(event.body)]],
        ['logs', h.logs.flatMap((l) => [l, ...strings(JSON.parse(l))])],
      ];
      for (const [where, texts] of places) for (const leak of leaks) t.notOk(texts.some((x) => x.includes(leak)), `${where}: no ${JSON.stringify(leak).slice(0, 24)}`);
    });
  }

  await t.test('a run that fails on an echoed 401 keeps its error free of secrets', async (t) => {
    api.requireOAuth = false;
    const dest = await h.request('GET', '/v1/connections/hdr-crm');
    api.canned.push({ status: 401, echo: true, pathPrefix: '/api/contacts' });
    const sync = await h.request('GET', '/v1/syncs/hdr');
    const run = await runToEnd(h, sync.body.id, { fullResync: true });
    t.equal(run.status, 'failed');
    t.equal(run.error.code, 'auth_failed');
    t.match(run.error.message, /REDACTED/);
    for (const leak of forms(SECRET)) t.notOk(JSON.stringify(run).includes(leak));
    t.ok(dest.body.id);
  });
});
