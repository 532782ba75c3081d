import pino from 'pino';
import t, { type Test } from 'tap';
import { systemActor } from '../../src/domain/context.ts';
import { RunExecutor, type EngineOptions } from '../../src/engine/executor.ts';
import type { QueryStats } from '../../src/engine/query.ts';
import { startFakeCrm } from '../fakes/crm.ts';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { keptAndFresh } from '../helpers/kept-table.ts';
import { runToEnd, setupSync, waitForJobsDone } from '../helpers/sync-setup.ts';

// The comparison table a worker keeps between a sync's runs (src/engine/fingerprint-cache.ts):
// used by the sync's next run on that worker only while it is the snapshot: brought up to date
// with every record the run wrote (including one a new row takes over from a deleted row, whose
// key the run never read), and never used after anyone else could have written the snapshot:
// a run on another worker, a re-point. Runs execute in-process on real executors (two stand for
// two workers) against real PostgreSQL and the CRM fake.

const logger = pino({ level: 'silent' });

async function fixture(t: Test, mode = 'upsert') {
  const h = await startTestBackhaul(t, { env: { LOG_LEVEL: 'fatal' } });
  const crm = await startFakeCrm();
  t.teardown(() => crm.close());
  const fx = await setupSync(t, h, crm.url, { rows: 50, mode });
  const [{ workspace_id: workspaceId }] = await h.bh.database.sql<{ workspace_id: string }[]>`select workspace_id from syncs where id = ${fx.syncId}`;
  const actor = systemActor(workspaceId);
  const worker = (opts: EngineOptions = {}) => {
    const stats: QueryStats[] = [];
    const executor = new RunExecutor(h.bh.database, h.bh.services, { retryBaseMs: 1, retryMaxMs: 5, heartbeatMs: 1000, ...opts }, { queried: (_r, s) => void stats.push(s) });
    const run = async () => {
      const { run } = await h.bh.services.runs.trigger(actor, fx.syncId, {}, 'api');
      await executor.execute(run.id, { workerId: 'w', signal: new AbortController().signal, logger });
      const r = await h.bh.services.runs.get(actor, run.id);
      t.equal(r.status, 'succeeded', JSON.stringify(r.error));
      return { run: r, read: stats.at(-1)! };
    };
    /** The kept table equals one loaded from the snapshot now (and there is one). */
    const keptIsSnapshot = async (what: string) => {
      const k = await keptAndFresh(h.bh.database.sql, executor, fx.syncId);
      t.ok(k, `${what}: a table is kept`);
      if (k) t.equal(k.kept, k.fresh, `${what}: the kept table is the snapshot`);
    };
    return { executor, run, keptIsSnapshot };
  };
  return { h, crm, ...fx, worker };
}

t.test('a kept table is used by the next run, and follows every record a run wrote', async (t) => {
  const f = await fixture(t);
  const w = f.worker();
  const first = await w.run();
  t.equal(first.read.incremental, false, 'the first run reads every row');
  t.same(w.executor.fingerprintCache.stats, { syncs: 0, bytes: 0 }, 'and keeps no table');
  const second = await w.run();
  t.same([second.read.incremental, second.read.keptTable], [true, undefined], 'the second run loads the table');
  await w.keptIsSnapshot('after a load');
  // A worker that did not run the sync before loads the table, and keeps it.
  const other = f.worker();
  t.equal((await other.run()).read.keptTable, undefined, 'a worker without a table loads it');
  await other.keptIsSnapshot('after a load');
  t.equal((await w.run()).read.keptTable, undefined, "the first worker's table is not used after the other worker ran the sync");

  const unchanged = await w.run();
  t.equal(unchanged.read.keptTable, true, 'the third run compares with the kept table');
  t.same(unchanged.run.counts.planned, { insert: 0, update: 0, delete: 0 });

  // A new row takes over the record of a deleted one (same email): the run writes a record whose
  // last claimant (row 1) it never read. Row 2 changes; row 3 leaves; row 60 is new.
  await f.src`update src.people set id = 1001 where id = 1`;
  await f.src`update src.people set name = 'Changed' where id = 2`;
  await f.src`delete from src.people where id = 3`;
  await f.src`insert into src.people (id, email, name, age) values (60, 'new@example.com', 'New', 1)`;
  const changed = await w.run();
  t.equal(changed.read.keptTable, true);
  t.same(changed.run.counts.planned, { insert: 1, update: 2, delete: 0 }, 'the takeover, the change and the new row');
  await w.keptIsSnapshot('after writes, a takeover and a row gone');

  const again = await w.run();
  t.equal(again.read.keptTable, true);
  t.same([again.read.rowsFetched, again.run.counts.planned], [0, { insert: 0, update: 0, delete: 0 }], 'nothing is read or sent again');
});

t.test('mirror: deletes and moved match values keep the kept table the snapshot', async (t) => {
  const f = await fixture(t, 'mirror');
  const w = f.worker();
  await w.run();
  await w.run();
  await f.src`delete from src.people where id in (4, 5)`;
  await f.src`update src.people set email = 'moved@example.com' where id = 6`;
  const r = await w.run();
  t.equal(r.read.keptTable, true);
  t.same(r.run.counts.planned, { insert: 1, update: 0, delete: 3 });
  t.ok(!f.crm.contacts.has('user6@example.com') && f.crm.contacts.has('moved@example.com'), 'the record moved');
  await w.keptIsSnapshot('after deletes');
  const again = await w.run();
  t.same([again.read.keptTable, again.run.counts.planned], [true, { insert: 0, update: 0, delete: 0 }]);
});

t.test('a run on another worker or a re-point means the table is loaded again', async (t) => {
  const f = await fixture(t);
  const a = f.worker();
  const b = f.worker();
  await a.run();
  await a.run();
  t.equal((await a.run()).read.keptTable, true, 'worker A keeps its table');

  // Worker B runs the sync (it writes the snapshot: row 7 changed).
  await f.src`update src.people set name = 'By B' where id = 7`;
  const onB = await b.run();
  t.same([onB.read.keptTable, onB.run.counts.planned], [undefined, { insert: 0, update: 1, delete: 0 }], 'B loads its own');
  // Row 7 changes back to what A's table holds: with A's stale table it would look unchanged.
  await f.src`update src.people set name = 'User 7' where id = 7`;
  const backOnA = await a.run();
  t.equal(backOnA.read.keptTable, undefined, "A's table is not used after B's run");
  t.same(backOnA.run.counts.planned, { insert: 0, update: 1, delete: 0 }, 'and the change back is sent');
  t.equal(f.crm.contacts.get('user7@example.com')?.name, 'User 7');
  const last = await a.run();
  t.equal(last.read.keptTable, true, 'the next run on A uses the table it kept again');
  // Retention deletes the run the table was kept after: the table is loaded again (never trusted
  // on a claim that cannot be checked).
  await f.h.bh.database.sql`delete from runs where id = ${last.run.id}`;
  t.equal((await a.run()).read.keptTable, undefined, 'not used once the run it was kept after is gone');
  t.equal((await a.run()).read.keptTable, true);

  // A re-point (the destination object's match field changes) starts a new snapshot.
  const patched = await f.h.request('PATCH', `/v1/syncs/${f.syncId}`, { body: { matchKey: { sourceColumn: 'email', destinationField: 'email' }, object: 'contacts', mode: 'mirror' } });
  t.equal(patched.status, 200, JSON.stringify(patched.body));
  const afterRepoint = await a.run();
  t.equal(afterRepoint.read.keptTable, undefined, 'not used after a re-point');
});

t.test('the budget bounds what is kept', async (t) => {
  const f = await fixture(t);
  const none = f.worker({ fingerprintCacheBytes: 0 });
  await none.run();
  t.equal((await none.run()).read.keptTable, undefined, 'budget 0: never kept');
  t.equal((await none.run()).read.keptTable, undefined);
  t.same(none.executor.fingerprintCache.stats, { syncs: 0, bytes: 0 });
  const tiny = f.worker({ fingerprintCacheBytes: 1024 });
  t.equal((await tiny.run()).read.incremental, true);
  await tiny.executor.fingerprintCache.settled();
  t.same(tiny.executor.fingerprintCache.stats, { syncs: 0, bytes: 0 }, 'a table larger than the budget is not kept');
  const some = f.worker();
  await some.run();
  await some.executor.fingerprintCache.settled();
  const { syncs, bytes } = some.executor.fingerprintCache.stats;
  t.ok(syncs === 1 && bytes > 0, `kept: ${bytes} bytes`);
});

t.test('a worker reports the tables it keeps in /metrics', async (t) => {
  const h = await startTestBackhaul(t, { start: { worker: true, engine: { retryBaseMs: 5, retryMaxMs: 50, heartbeatMs: 200 } } });
  const crm = await startFakeCrm();
  t.teardown(() => crm.close());
  const { syncId } = await setupSync(t, h, crm.url, { rows: 30 });
  const gauges = async () => {
    const text = String((await h.request('GET', '/metrics')).body);
    const value = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1]);
    return { syncs: value('backhaul_kept_tables'), bytes: value('backhaul_kept_tables_bytes') };
  };
  t.same(await gauges(), { syncs: 0, bytes: 0 }, 'none before a run');
  for (const body of [{}, {}]) t.equal((await runToEnd(h, syncId, body)).status, 'succeeded');
  // The second (incremental) run's table is kept once its refresh has run. The table is handed
  // to the cache after the run is terminal (its tables dropped, its hooks run) and before its job
  // completes: wait for the job, not for the status.
  await waitForJobsDone(h, ['backhaul_run']);
  const cache = h.bh.worker!.executor.fingerprintCache;
  await cache.settled();
  const g = await gauges();
  t.same(g, { syncs: 1, bytes: cache.stats.bytes }, 'one table, its bytes');
  t.ok(g.bytes > 0);
});
