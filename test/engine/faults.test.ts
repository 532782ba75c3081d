import t from 'tap';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { startFakeCrm } from '../fakes/crm.ts';
import { runToEnd, setupSync, waitForRun } from '../helpers/sync-setup.ts';

const engine = { retryBaseMs: 5, retryMaxMs: 40, heartbeatMs: 200 };
const badAge = (row: Record<string, unknown>) => (Number(row.age) === 33 ? `age 33 is not allowed for ${row.email}` : undefined);

t.test('429 with Retry-After, 5xx, resets and per-row rejects: the destination ends equal to the model minus rejected rows', async (t) => {
  const h = await startTestBackhaul(t, { start: { worker: true, engine } });
  const crm = await startFakeCrm({ p429: 0.15, p5xx: 0.15, pReset: 0.1, retryAfterSeconds: 0, reject: badAge });
  t.teardown(() => crm.close());
  const { src, syncId } = await setupSync(t, h, crm.url, { rows: 2000, delivery: { batchSize: 100, concurrency: 4, maxRetries: 20 } });
  const rejectedIds = (await src<{ id: number }[]>`select id from src.people where age = 33 order by id`).map((r) => String(r.id));
  t.ok(rejectedIds.length > 0);

  const run = await runToEnd(h, syncId);
  t.equal(run.status, 'partially_succeeded', JSON.stringify(run.error));
  t.equal(run.counts.rejected.insert, rejectedIds.length);
  t.equal(run.counts.succeeded.insert, 2000 - rejectedIds.length);
  const model = await src<{ email: string; name: string; age: number }[]>`select email, name, age from src.people where age <> 33`;
  t.equal(crm.contacts.size, model.length, 'destination holds the model minus the rejected rows');
  t.ok(model.every((m) => crm.contacts.get(m.email)?.name === m.name && crm.contacts.get(m.email)?.age === m.age), 'with the right values');

  const rej = await h.request('GET', `/v1/runs/${run.id}/records?status=rejected&limit=200`);
  t.same(rej.body.data.map((r: any) => r.primaryKey).sort(), [...rejectedIds].sort());
  t.ok(rej.body.data.every((r: any) => /age 33 is not allowed/.test(r.error.message)), "each carries the destination's reason");

  // The next run retries exactly the rejected rows; once the destination accepts them, history shows both.
  crm.faults = {};
  const next = await runToEnd(h, syncId);
  t.same(next.counts.planned, { insert: rejectedIds.length, update: 0, delete: 0 }, 'only the rejected rows are planned again');
  t.equal(next.status, 'succeeded');
  const hist = await h.request('GET', `/v1/syncs/${syncId}/records/${rejectedIds[0]}`);
  t.same(hist.body.data.map((r: any) => r.status), ['succeeded', 'rejected']);
});

t.test('a batch refused as a whole is bisected until the bad rows stand alone', async (t) => {
  const h = await startTestBackhaul(t, { start: { worker: true, engine } });
  const crm = await startFakeCrm({ strict: true, reject: badAge });
  t.teardown(() => crm.close());
  const { src, syncId } = await setupSync(t, h, crm.url, { rows: 400, delivery: { batchSize: 100, concurrency: 2 } });
  const bad = (await src<{ id: number }[]>`select id from src.people where age = 33`).length;
  const run = await runToEnd(h, syncId);
  t.equal(run.status, 'partially_succeeded');
  t.equal(run.counts.rejected.insert, bad);
  t.equal(crm.contacts.size, 400 - bad);
  const rej = await h.request('GET', `/v1/runs/${run.id}/records?status=rejected`);
  t.ok(rej.body.data.every((r: any) => r.error.code === 'http_400' && /age 33 is not allowed/.test(r.error.message)));

  // The row debugger shows the refused requests that carried a bad row, down to the one it stood alone in.
  const one = await h.request('GET', `/v1/runs/${run.id}/records?primaryKey=${rej.body.data[0].primaryKey}`);
  const refused = one.body.data[0].exchanges.filter((x: any) => x.response?.status === 400);
  t.ok(refused.length >= 2, `the whole-batch refusal and the bisected ones are kept (${refused.length})`);
  const alone = refused.find((x: any) => JSON.parse(x.request.body).inputs.length === 1);
  t.ok(alone, 'including the request where the row was alone');
  t.match(alone.response.body, /age 33 is not allowed/);
});

t.test('the row debugger keeps retried requests (429) with the rows they carried', async (t) => {
  const h = await startTestBackhaul(t, { start: { worker: true, engine } });
  const crm = await startFakeCrm();
  t.teardown(() => crm.close());
  const { syncId } = await setupSync(t, h, crm.url, { rows: 3 });
  // The first request is answered 429 (the fake counts it down: no timer to race), the retry succeeds.
  crm.faults = { p429: 1, retryAfterSeconds: 0, times: 1 };
  const run = await runToEnd(h, syncId);
  t.equal(run.status, 'succeeded');
  t.equal(crm.faults.times, 0, 'the 429 was answered');
  const rec = await h.request('GET', `/v1/runs/${run.id}/records?primaryKey=1`);
  const statuses = rec.body.data[0].exchanges.map((x: any) => x.response?.status);
  t.ok(statuses.includes(429), `the throttled attempt is shown (${statuses.join(', ')})`);
  t.ok(statuses.includes(200), 'and the one that succeeded');
});

t.test('a destination that stays down fails the run with a hint; undelivered rows are retried by the next run', async (t) => {
  const h = await startTestBackhaul(t, { start: { worker: true, engine } });
  const crm = await startFakeCrm({ p5xx: 1 });
  t.teardown(() => crm.close());
  const { syncId } = await setupSync(t, h, crm.url, { rows: 50, delivery: { maxRetries: 2 } });
  const run = await runToEnd(h, syncId);
  t.equal(run.status, 'failed');
  t.equal(run.error.code, 'destination_unavailable');
  t.equal(run.error.retryable, true);
  t.ok(run.error.hint);
  t.ok(run.finishedAt);
  crm.faults = {};
  const next = await runToEnd(h, syncId);
  t.equal(next.status, 'succeeded');
  t.equal(next.counts.succeeded.insert, 50);
  t.equal(crm.contacts.size, 50);
});

t.test('bad credentials fail the run at once with the fatal code', async (t) => {
  const h = await startTestBackhaul(t, { start: { worker: true, engine } });
  const crm = await startFakeCrm();
  t.teardown(() => crm.close());
  const { syncId } = await setupSync(t, h, crm.url, { rows: 5 });
  const conn = await h.request('GET', `/v1/connections/people-db`);
  await h.request('PATCH', `/v1/connections/${conn.body.id}`, { body: { config: { user: 'no_such_user' } } });
  const run = await runToEnd(h, syncId);
  t.equal(run.status, 'failed');
  t.equal(run.error.code, 'auth_failed');
  t.equal(run.error.retryable, false);
  t.equal(crm.requests, 0);
});

t.test('cancel stops a run between batches; acknowledged rows stay delivered', async (t) => {
  const h = await startTestBackhaul(t, { start: { worker: true, engine } });
  const crm = await startFakeCrm({ delayMs: 30 });
  t.teardown(() => crm.close());
  const { syncId } = await setupSync(t, h, crm.url, { rows: 3000, delivery: { batchSize: 20, concurrency: 1 } });
  const trig = await h.request('POST', `/v1/syncs/${syncId}/runs`, { body: {} });
  await waitForRun(h, trig.body.id, 30_000, (r) => r.counts.succeeded.insert >= 100);
  const c = await h.request('POST', `/v1/runs/${trig.body.id}/cancel`);
  t.equal(c.status, 200);
  const run = await waitForRun(h, trig.body.id);
  t.equal(run.status, 'cancelled');
  t.ok(run.counts.succeeded.insert < 3000, 'stopped before the end');
  t.equal(crm.contacts.size, run.counts.succeeded.insert, 'every acknowledged row is in the destination, nothing more');
  const again = await h.request('POST', `/v1/runs/${trig.body.id}/cancel`);
  t.equal(again.status, 409);
  t.equal(again.body.code, 'run_finished');
  crm.faults = {};
  const next = await runToEnd(h, syncId);
  t.equal(next.counts.planned.insert, 3000 - run.counts.succeeded.insert, 'the next run sends the rest');
  t.equal(crm.contacts.size, 3000);
});
