import t from 'tap';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { startFakeCrm } from '../fakes/crm.ts';
import { runToEnd, setupSync } from '../helpers/sync-setup.ts';

const engine = { retryBaseMs: 5, retryMaxMs: 40, heartbeatMs: 200 };
const badAge = (row: Record<string, unknown>) => (Number(row.age) === 33 ? `age 33 is not allowed for ${row.email}` : undefined);

/** The value of one sample in Prometheus text, or undefined. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got = Object.fromEntries([...(m[3] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) return Number(m[4]);
  }
  return undefined;
}

t.test('/metrics values match the counts of the runs', async (t) => {
  const h = await startTestBackhaul(t, { start: { worker: true, engine } });
  const crm = await startFakeCrm({ reject: badAge, p429: 0.2, retryAfterSeconds: 0 });
  t.teardown(() => crm.close());
  const { syncId, destinationId } = await setupSync(t, h, crm.url, { rows: 300, delivery: { batchSize: 50, maxRetries: 20 } });
  const run = await runToEnd(h, syncId);
  t.equal(run.status, 'partially_succeeded');
  const run2 = await runToEnd(h, syncId, { fullResync: true });

  const sync = { sync: syncId };
  // Counters move right after a run's terminal status is written (the worker's finish hook).
  let res: Response;
  let text: string;
  for (let i = 0; ; i++) {
    res = await fetch(`${h.url}/metrics`);
    text = await res.text();
    if (sample(text, 'backhaul_runs_total', { ...sync, status: 'partially_succeeded' }) === 2 || i > 600) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  t.equal(res.status, 200, 'public by default');
  t.match(res.headers.get('content-type'), /text\/plain/);
  const sum = (k: 'succeeded' | 'rejected' | 'planned') => run.counts[k].insert + run2.counts[k].insert;
  t.equal(sample(text, 'backhaul_rows_queried_total', sync), run.counts.queried + run2.counts.queried);
  t.equal(sample(text, 'backhaul_rows_invalid_total', sync), 0);
  t.equal(sample(text, 'backhaul_rows_planned_total', { ...sync, operation: 'insert' }), sum('planned'));
  t.equal(sample(text, 'backhaul_rows_succeeded_total', { ...sync, operation: 'insert' }), sum('succeeded'));
  t.equal(sample(text, 'backhaul_rows_rejected_total', { ...sync, operation: 'insert' }), sum('rejected'));
  t.equal(sample(text, 'backhaul_rows_succeeded_total', { ...sync, operation: 'update' }), run.counts.succeeded.update + run2.counts.succeeded.update);
  t.equal(sample(text, 'backhaul_runs_total', { ...sync, status: 'partially_succeeded' }), 2);
  t.equal(sample(text, 'backhaul_run_phase_duration_seconds_count', { phase: 'delivering' }), 2);
  t.equal(sample(text, 'backhaul_run_phase_duration_seconds_count', { phase: 'finalizing' }), 2);
  t.equal(sample(text, 'backhaul_run_duration_seconds_count', { status: 'partially_succeeded' }), 2);
  const ok2xx = sample(text, 'backhaul_destination_requests_total', { connection: destinationId, status_class: '2xx' });
  t.equal(ok2xx, crm.answeredBatches.length, 'one 2xx per batch the CRM answered');
  const throttled = sample(text, 'backhaul_destination_throttled_total', sync)!;
  t.ok(throttled > 0, `429s counted (${throttled})`);
  t.equal(sample(text, 'backhaul_destination_requests_total', { connection: destinationId, status_class: '4xx' }), throttled);
  t.equal(sample(text, 'backhaul_destination_retries_total', { ...sync, code: 'rate_limited' }), throttled);
  t.ok(sample(text, 'backhaul_job_queue_depth') !== undefined || /backhaul_job_queue_depth/.test(text), 'queue depth exported');
  t.ok(sample(text, 'backhaul_job_queue_oldest_age_seconds')! >= 0);
  t.ok(sample(text, 'backhaul_process_cpu_user_seconds_total')! > 0, 'process metrics');
  t.notOk(/user\d+@example\.com|127\.0\.0\.1/.test(text), 'no row keys or URLs in labels');
});

t.test('/metrics can require a token', async (t) => {
  const h = await startTestBackhaul(t, { env: { BACKHAUL_METRICS_TOKEN: 'scrape-me-please' } });
  const no = await fetch(`${h.url}/metrics`);
  t.equal(no.status, 401);
  t.match(no.headers.get('content-type'), /problem\+json/);
  t.equal((await fetch(`${h.url}/metrics`, { headers: { authorization: 'Bearer wrong' } })).status, 401);
  t.equal((await fetch(`${h.url}/metrics`, { headers: { authorization: 'Bearer scrape-me-please' } })).status, 200);
});

t.test("row debugger: a rejected row's request and response, auth redacted", async (t) => {
  const h = await startTestBackhaul(t, { start: { worker: true, engine } });
  const crm = await startFakeCrm({ reject: badAge });
  t.teardown(() => crm.close());
  const { src, syncId, destinationId } = await setupSync(t, h, crm.url, { rows: 120, delivery: { batchSize: 50 } });
  const conn = await h.request('PATCH', `/v1/connections/${destinationId}`, { body: { config: { auth: { type: 'bearer' } }, secrets: { token: 'tok_SuperSecret_123' } } });
  t.equal(conn.status, 200, JSON.stringify(conn.body));
  const [bad] = await src<{ id: number; email: string }[]>`select id, email from src.people where age = 33 order by id limit 1`;
  const [good] = await src<{ id: number; email: string }[]>`select id, email from src.people where age <> 33 order by id limit 1`;
  const run = await runToEnd(h, syncId);
  t.equal(run.status, 'partially_succeeded');

  const r = await h.request('GET', `/v1/runs/${run.id}/records?primaryKey=${bad.id}`);
  t.equal(r.status, 200);
  t.equal(r.body.data.length, 1);
  const rec = r.body.data[0];
  t.equal(rec.status, 'rejected');
  t.type(rec.batch, 'number');
  t.equal(rec.exchanges.length, 1, 'the request that carried the row');
  const ex = rec.exchanges[0];
  t.equal(ex.request.method, 'POST');
  t.match(ex.request.url, /\/contacts\/batch\/upsert$/);
  t.equal(ex.request.headers.authorization, '[REDACTED]', 'auth header redacted');
  t.notOk(JSON.stringify(r.body).includes('tok_SuperSecret_123'), 'the token appears nowhere');
  t.ok(ex.request.body.includes(bad.email), 'what was sent for the row');
  t.equal(ex.response.status, 200);
  t.ok(ex.response.body.includes(`age 33 is not allowed for ${bad.email}`), 'and what came back');
  t.type(ex.durationMs, 'number');

  const g = await h.request('GET', `/v1/runs/${run.id}/records?primaryKey=${good.id}`);
  t.equal(g.body.data[0].status, 'succeeded');
  t.equal(g.body.data[0].exchanges.length, 1);
  t.ok(g.body.data[0].exchanges[0].request.body.includes(good.email));

  const list = await h.request('GET', `/v1/runs/${run.id}/records?status=rejected`);
  t.equal(list.body.data[0].exchanges, undefined, 'lists stay light: exchanges only with ?primaryKey=');
});

t.test('row debugger off with BACKHAUL_DEBUGGER_RETENTION_DAYS=0', async (t) => {
  const h = await startTestBackhaul(t, { start: { worker: true, engine }, env: { BACKHAUL_DEBUGGER_RETENTION_DAYS: '0' } });
  const crm = await startFakeCrm();
  t.teardown(() => crm.close());
  const { syncId } = await setupSync(t, h, crm.url, { rows: 5 });
  const run = await runToEnd(h, syncId);
  const r = await h.request('GET', `/v1/runs/${run.id}/records?primaryKey=1`);
  t.same(r.body.data[0].exchanges, []);
});
