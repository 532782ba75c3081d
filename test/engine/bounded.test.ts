import t from 'tap';
import { startFakeCrm } from '../fakes/crm.ts';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { setupSync, waitForRun } from '../helpers/sync-setup.ts';
import { startTcpProxy } from '../helpers/tcp-proxy.ts';

// Runs always end (issue 12, item 4, engine side): a cancel ends a run in querying at once, and a
// run whose source never answers fails at its deadline as retryable instead of holding a worker
// slot forever. The source here is a query that sleeps on the server.

const engine = { retryBaseMs: 5, retryMaxMs: 50, heartbeatMs: 100 };

t.test('cancel works while the model is still being read', async (t) => {
  const h = await startTestBackhaul(t, { start: { worker: true, engine } });
  const crm = await startFakeCrm();
  t.teardown(() => crm.close());
  const s = await setupSync(t, h, crm.url, { rows: 3 });
  const m = await h.request('PATCH', '/v1/models/people', { body: { sql: 'select id, email, name, age from src.people, pg_sleep(600) s' } });
  t.equal(m.status, 200, JSON.stringify(m.body));
  const trig = await h.request('POST', `/v1/syncs/${s.syncId}/runs`, { body: {} });
  await waitForRun(h, trig.body.id, 60_000, (r) => r.phase === 'querying');
  const c = await h.request('POST', `/v1/runs/${trig.body.id}/cancel`);
  t.equal(c.status, 200);
  const done = await waitForRun(h, trig.body.id, 60_000);
  t.equal(done.status, 'cancelled');
  t.equal(crm.requests, 0, 'nothing was sent');
  // The worker slot is free again: another run of the sync completes.
  await h.request('PATCH', '/v1/models/people', { body: { sql: 'select id, email, name, age from src.people' } });
  const next = await h.request('POST', `/v1/syncs/${s.syncId}/runs`, { body: {} });
  t.equal((await waitForRun(h, next.body.id, 60_000)).status, 'succeeded');
});

t.test('a run whose source never answers fails at its deadline, retryable', async (t) => {
  const h = await startTestBackhaul(t, { start: { worker: true, engine: { ...engine, runTimeoutMs: 1500 } } });
  const crm = await startFakeCrm();
  t.teardown(() => crm.close());
  const s = await setupSync(t, h, crm.url, { rows: 3 });
  await h.request('PATCH', '/v1/models/people', { body: { sql: 'select id, email, name, age from src.people, pg_sleep(600) s' } });
  const trig = await h.request('POST', `/v1/syncs/${s.syncId}/runs`, { body: {} });
  const done = await waitForRun(h, trig.body.id, 60_000);
  t.equal(done.status, 'failed');
  t.equal(done.error.code, 'run_timeout');
  t.equal(done.error.retryable, true);
  t.ok(done.finishedAt);
});

t.test('a source connection lost mid-read fails the run as retryable source_unavailable, in seconds', async (t) => {
  const h = await startTestBackhaul(t, { start: { worker: true, engine } });
  const crm = await startFakeCrm();
  t.teardown(() => crm.close());
  const s = await setupSync(t, h, crm.url, { rows: 3 });
  const u = new URL(h.databaseUrl);
  const proxy = await startTcpProxy({ host: u.hostname, port: Number(u.port) });
  t.teardown(() => proxy.close());
  // The source now goes through the proxy (moving it means sending its password again).
  const conn = await h.request('PATCH', '/v1/connections/people-db', { body: { config: { port: proxy.port }, secrets: { password: decodeURIComponent(u.password) } } });
  t.equal(conn.status, 200, JSON.stringify(conn.body));
  await h.request('PATCH', '/v1/models/people', { body: { sql: 'select id, email, name, age from src.people, pg_sleep(600) s' } });
  const before = proxy.accepted;
  const trig = await h.request('POST', `/v1/syncs/${s.syncId}/runs`, { body: {} });
  // The run's columns() and then its stream() each open a connection: cut while the stream's waits.
  await proxy.waitFor(() => proxy.accepted >= before + 2 && proxy.open >= 1, 60_000);
  await waitForRun(h, trig.body.id, 60_000, (r) => r.phase === 'querying');
  proxy.cutAll();
  const done = await waitForRun(h, trig.body.id, 60_000);
  t.equal(done.status, 'failed');
  t.equal(done.error.code, 'source_unavailable', JSON.stringify(done.error));
  t.equal(done.error.retryable, true);
});
