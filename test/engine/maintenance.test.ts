import t from 'tap';
import postgres from 'postgres';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { startFakeCrm } from '../fakes/crm.ts';
import { runToEnd, setupSync } from '../helpers/sync-setup.ts';

t.test('the maintenance job purges run records past BACKHAUL_RECORD_RETENTION_DAYS and keeps the rest', async (t) => {
  const h = await startTestBackhaul(t, { env: { BACKHAUL_RECORD_RETENTION_DAYS: '7' }, start: { worker: true, engine: { retryBaseMs: 5, heartbeatMs: 200 } } });
  const crm = await startFakeCrm();
  t.teardown(() => crm.close());
  const { syncId } = await setupSync(t, h, crm.url, { rows: 20 });
  const old = await runToEnd(h, syncId);
  await runToEnd(h, syncId, { fullResync: true });
  const db = postgres(h.databaseUrl, { max: 1, onnotice: () => {} });
  t.teardown(() => db.end());
  await db`update runs set finished_at = now() - interval '8 days' where id = ${old.id}`;
  // Leftovers of a run whose sync was deleted mid-run, next to the tables of a run still going.
  await db`create table backhaul_staging.stg_run_gone (pk text)`;
  await db`create table backhaul_staging.plan_run_gone (seq int)`;
  await db`insert into runs (id, workspace_id, sync_id, status, trigger, counts) select 'run_live', workspace_id, id, 'running', 'api', '{}'::jsonb from syncs where id = ${syncId}`;
  await db`create table backhaul_staging.stg_run_live (pk text)`;
  await db`select graphile_worker.add_job('backhaul_maintenance', '{}'::json)`;
  const deadline = Date.now() + 20_000;
  let left = 20;
  while (left > 0 && Date.now() < deadline) {
    [{ n: left }] = await db`select count(*)::int as n from run_outcomes where run_id = ${old.id}`;
    await new Promise((r) => setTimeout(r, 100));
  }
  t.equal(left, 0, 'records older than the retention window are gone');
  const [{ n }] = await db`select count(*)::int as n from run_outcomes where run_id <> ${old.id}`;
  t.equal(n, 20, 'recent records stay');
  const run = await h.request('GET', `/v1/runs/${old.id}`);
  t.equal(run.body.counts.succeeded.insert, 20, 'the run itself and its counts stay');
  const tables = (await db`select tablename from pg_tables where schemaname = 'backhaul_staging' order by 1`).map((r) => r.tablename);
  t.same(tables, ['stg_run_live'], "orphaned staging tables are dropped, an active run's are kept");
});

t.test("deleting a sync removes its runs' records and its snapshot (triggers stand in for foreign keys)", async (t) => {
  const h = await startTestBackhaul(t, { start: { worker: true, engine: { retryBaseMs: 5, heartbeatMs: 200 } } });
  const crm = await startFakeCrm();
  t.teardown(() => crm.close());
  const kept = await setupSync(t, h, crm.url, { rows: 7, slug: 'kept' });
  const gone = await setupSync(t, h, crm.url, { slug: 'gone' });
  await runToEnd(h, kept.syncId);
  const run = await runToEnd(h, gone.syncId);
  const db = postgres(h.databaseUrl, { max: 1, onnotice: () => {} });
  t.teardown(() => db.end());
  const count = async (syncId: string) => {
    const [r] = await db`select (select count(*)::int from run_outcomes where sync_id = ${syncId}) as records,
                                (select count(*)::int from sync_snapshots where sync_id = ${syncId}) as snapshot`;
    return r;
  };
  t.same(await count(gone.syncId), { records: 7, snapshot: 7 }, 'the run wrote records and a snapshot');
  const del = await h.request('DELETE', `/v1/syncs/${gone.syncId}`);
  t.equal(del.status, 204);
  t.same(await count(gone.syncId), { records: 0, snapshot: 0 }, "the deleted sync's records and snapshot are gone");
  t.equal((await db`select count(*)::int as n from run_outcomes where run_id = ${run.id}`)[0].n, 0);
  t.same(await count(kept.syncId), { records: 7, snapshot: 7 }, "another sync's rows stay");
});
