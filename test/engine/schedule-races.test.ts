import t, { type Test } from 'tap';
import postgres from 'postgres';
import { sql as dsql } from 'drizzle-orm';
import type { Task } from 'graphile-worker';
import { realClock } from '../../src/engine/rate-limiter.ts';
import { gcJobQueues } from '../../src/engine/job-queues.ts';
import { fireSlot, planSchedule } from '../../src/engine/scheduler.ts';
import { startWorker } from '../../src/engine/worker.ts';
import { startTestBackhaul, type TestBackhaul } from '../helpers/backhaul.ts';
import { startFakeCrm } from '../fakes/crm.ts';
import { setupSync, waitForRun } from '../helpers/sync-setup.ts';

// The scheduler's races, driven deterministically with row and table locks held by the test:
// a schedule change that commits while a fire is in progress, and the cleanup of empty job
// queues racing add_job.

/** A clock that runs at the real pace from a time the test sets (a frozen one would starve the rate limiter of a running run). */
function movableClock(iso: string) {
  let shift = Date.parse(iso) - Date.now();
  return { now: () => Date.now() + shift, sleep: realClock.sleep, set: (s: string) => (shift = Date.parse(s) - Date.now()) };
}

async function until(cond: () => Promise<boolean>, what: string, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Whether some backend is waiting for a lock that backend `pid` holds. */
async function blocksSomeone(db: postgres.Sql, pid: number): Promise<boolean> {
  const [{ n }] = await db`select count(*)::int as n from pg_stat_activity where ${pid} = any(pg_blocking_pids(pid))`;
  return n > 0;
}

async function scheduleJobs(db: postgres.Sql, syncId: string) {
  // The scheduled job (by key), and any job of this task still held by the worker (its key is
  // cleared when a change re-plans it mid-fire).
  return db`select key, run_at, locked_at from graphile_worker.jobs where task_identifier = 'backhaul_schedule' and (key = ${`schedule:${syncId}`} or key is null)`;
}

async function scheduleFixture(t: Test) {
  const t0 = Math.ceil(Date.now() / 1000) * 1000;
  const at = (s: number) => new Date(t0 + s * 1000).toISOString();
  const clock = movableClock(at(0));
  const h = await startTestBackhaul(t, { start: { worker: true, engine: { clock, retryBaseMs: 5, heartbeatMs: 200 } } });
  const crm = await startFakeCrm();
  t.teardown(() => crm.close());
  const { syncId } = await setupSync(t, h, crm.url, { rows: 3 });
  const db = postgres(h.databaseUrl, { max: 2, onnotice: () => {} });
  t.teardown(() => db.end());
  const r = await h.request('PATCH', `/v1/syncs/${syncId}`, { body: { schedule: { type: 'interval', everySeconds: 3600, anchor: at(0) } } });
  t.equal(r.status, 200);
  t.same((await scheduleJobs(db, syncId)).map((j) => (j.run_at as Date).toISOString()), [at(3600)], 'one job, at the first slot');
  return { h, crm, syncId, db, clock, at };
}

type Fixture = Awaited<ReturnType<typeof scheduleFixture>>;

/**
 * Fires the sync's slot while the test holds its row lock; once the schedule task waits for it,
 * `change` runs in the test's transaction (as a PATCH does: update the sync, re-plan its job)
 * and commits. Returns when the fire has finished.
 */
async function fireDuringChange(f: Fixture, change: (tx: Parameters<Parameters<TestBackhaul['bh']['database']['db']['transaction']>[0]>[0]) => Promise<void>) {
  const { h, db, syncId, clock, at } = f;
  await h.bh.database.db.transaction(async (tx) => {
    const [{ pid }] = (await tx.execute(dsql`select pg_backend_pid() as pid`)) as unknown as { pid: number }[];
    await tx.execute(dsql`select 1 from syncs where id = ${syncId} for update`);
    clock.set(at(3600));
    await db`update graphile_worker._private_jobs set run_at = now() where key = ${`schedule:${syncId}`}`;
    // The task has read the sync (as it was before this change) and now waits for the row.
    await until(() => blocksSomeone(db, pid), 'the schedule task to wait on the sync row');
    await change(tx);
  });
  // The fire is over when no schedule job is held by the worker any more.
  await until(async () => (await scheduleJobs(db, syncId)).every((j) => j.locked_at === null && j.key !== null), 'the fire to finish');
}

t.test('a schedule change committed while a fire triggers its run is not overwritten by a plan from the old schedule', async (t) => {
  const f = await scheduleFixture(t);
  const { h, db, syncId, clock, at } = f;
  // The fire waits in runs.trigger (it locks the sync row); the change commits meanwhile.
  await fireDuringChange(f, async (tx) => {
    await tx.execute(
      dsql`update syncs set schedule = ${JSON.stringify({ type: 'interval', everySeconds: 900, anchor: at(100) })}::jsonb, version = version + 1 where id = ${syncId}`,
    );
    await planSchedule(tx, syncId, new Date(clock.now()));
  });
  const runs = (await h.request('GET', `/v1/syncs/${syncId}/runs`)).body.data;
  t.equal(runs.length, 1, 'the slot triggered its run');
  t.equal(runs[0].trigger, 'schedule');
  t.same(
    (await scheduleJobs(db, syncId)).map((j) => (j.run_at as Date).toISOString()),
    [at(3700)],
    'the next slot follows the new schedule (every 900 s from 100 s), not the old one (it would be 7200 s)',
  );
  await waitForRun(h, runs[0].id);
});

t.test('a change committed while a skipped slot plans the next is not overwritten either', async (t) => {
  const f = await scheduleFixture(t);
  const { h, crm, db, syncId, clock } = f;
  // A slow run is active, so the fire skips its slot and goes straight to planning the next.
  crm.faults = { delayMs: 400 };
  await h.request('PATCH', `/v1/syncs/${syncId}`, { body: { delivery: { batchSize: 1, concurrency: 1 } } });
  const slow = await h.request('POST', `/v1/syncs/${syncId}/runs`, { body: {} });
  await waitForRun(h, slow.body.id, 30_000, (r) => r.status === 'running');
  // The fire reads the sync, skips its slot and waits for the row to plan the next; the change
  // (to a cron schedule) commits meanwhile.
  let planned: Date | null = null;
  await fireDuringChange(f, async (tx) => {
    await tx.execute(dsql`update syncs set schedule = ${JSON.stringify({ type: 'cron', expression: '0 6 1 1 *', timezone: 'UTC' })}::jsonb, version = version + 1 where id = ${syncId}`);
    planned = await planSchedule(tx, syncId, new Date(clock.now()));
  });
  t.match(planned!.toISOString(), /-01-01T06:00:00.000Z$/);
  t.same(
    (await scheduleJobs(db, syncId)).map((j) => (j.run_at as Date).toISOString()),
    [planned!.toISOString()],
    'the next slot follows the new schedule (1 January, 06:00), not the old one',
  );
  t.equal((await h.request('GET', `/v1/syncs/${syncId}/runs`)).body.data.length, 1, 'the skipped slot queued nothing');
  crm.faults = {};
  await waitForRun(h, slow.body.id);
});

t.test('a run queued while a scheduled fire waits for the sync row makes the fire skip: never two queued runs', async (t) => {
  // The fire is one statement; its snapshot is taken before it waits for the row, so it cannot
  // see a run queued meanwhile: the unique index on queued runs turns its insert into nothing.
  const h = await startTestBackhaul(t);
  const crm = await startFakeCrm();
  t.teardown(() => crm.close());
  const { syncId } = await setupSync(t, h, crm.url, { rows: 1 });
  await h.request('PATCH', `/v1/syncs/${syncId}`, { body: { schedule: { type: 'interval', everySeconds: 600 } } });
  const db = postgres(h.databaseUrl, { max: 2, onnotice: () => {} });
  t.teardown(() => db.end());
  const deps = { database: h.bh.database, services: h.bh.services, logger: h.bh.logger };
  let fire: ReturnType<typeof fireSlot> | undefined;
  await db.begin(async (tx) => {
    const [{ pid }] = await tx`select pg_backend_pid() as pid`;
    const [sync] = await tx`select workspace_id from syncs where id = ${syncId} for update`;
    fire = fireSlot(deps, syncId, new Date(), new Date());
    await until(() => blocksSomeone(db, pid), 'the fire to wait on the sync row');
    // As runs.trigger does under the same lock.
    await tx`insert into runs (id, workspace_id, sync_id, status, trigger, counts) values ('run_concurrent', ${sync!.workspace_id}, ${syncId}, 'queued', 'api', '{}')`;
  });
  const fired = await fire!;
  t.equal(fired.outcome, 'skipped', 'the fire skips its slot');
  t.same(await db`select id from runs where sync_id = ${syncId} and status = 'queued'`, [{ id: 'run_concurrent' }], 'one queued run: the one triggered meanwhile');
  t.ok(fired.next, 'the next slot is planned');
});

// ---- empty job queue cleanup racing add_job ----

async function queueFixture(t: Test) {
  const h = await startTestBackhaul(t);
  const db = postgres(h.databaseUrl, { max: 12, onnotice: () => {} });
  t.teardown(() => db.end());
  await db`create table gc_probe_log (i int primary key, queue text not null, job_queue_id int)`;
  const running = new Set<string>();
  let overlaps = 0;
  const gc_probe: Task = async (payload, helpers) => {
    const { i, q } = payload as { i: number; q: string };
    if (running.has(q)) overlaps++; // a job outside its queue would run beside another of the queue
    running.add(q);
    try {
      await db`insert into gc_probe_log ${db({ i, queue: q, job_queue_id: helpers.job.job_queue_id })}`;
    } finally {
      running.delete(q);
    }
  };
  const worker = await startWorker({
    database: h.bh.database,
    services: h.bh.services,
    logger: h.bh.logger,
    concurrency: 4,
    recordRetentionDays: 30,
    sweepEveryMs: 3_600_000,
    tasks: { gc_probe },
  });
  t.teardown(() => worker.stop());
  // The sweep a worker runs at start also deletes empty job queues: the scenarios begin after it
  // (on a loaded machine it ran after job 1 and took the empty queue the test looks for).
  await worker.firstSweep;
  const addJob = (tx: postgres.Sql | postgres.TransactionSql, i: number, q: string) =>
    tx`select graphile_worker.add_job('gc_probe', json_build_object('i', ${i}::int, 'q', ${q}::text), queue_name => ${q}::text)`;
  const executed = async (i: number) => (await db`select job_queue_id from gc_probe_log where i = ${i}`)[0];
  const queueIds = async (q: string) => (await db`select id from graphile_worker._private_job_queues where queue_name = ${q}`).map((r) => r.id as number);
  return { h, db, addJob, executed, queueIds, overlaps: () => overlaps };
}

t.test('queue cleanup vs add_job, deterministically: a job being added keeps its queue; a queue deleted meanwhile is re-created', async (t) => {
  const { db, addJob, executed, queueIds } = await queueFixture(t);
  // An empty queue left behind by a finished job.
  await addJob(db, 1, 'sync:a');
  await until(async () => !!(await executed(1)), 'job 1');
  t.equal((await queueIds('sync:a')).length, 1, 'the empty queue row is left behind');

  // 1. add_job's transaction is open (its job is not visible yet) when the cleanup runs: the
  //    cleanup must not delete the queue under it. It waits, then gives up for this pass.
  const reserved = await db.reserve();
  await reserved`begin`;
  await addJob(reserved, 2, 'sync:a');
  const [queueOfJob2] = await queueIds('sync:a');
  await t.rejects(gcJobQueues(db), { code: '55P03' }, 'the cleanup waits for the adding transaction, then times out (lock_timeout)');
  t.same(await queueIds('sync:a'), [queueOfJob2], 'the queue is still there');
  await reserved`commit`;
  reserved.release();
  await until(async () => !!(await executed(2)), 'job 2');
  t.equal((await executed(2)).job_queue_id, queueOfJob2, 'job 2 ran in its queue');

  // 2. The cleanup's transaction has deleted the (empty) queue but not committed when add_job
  //    comes: add_job waits, then sees the row gone and creates it again for its job.
  await until(async () => (await db`select count(*)::int as n from graphile_worker._private_jobs`)[0]!.n === 0, 'the queue to be empty');
  let adding: Promise<unknown> | undefined;
  await db.begin(async (tx) => {
    const [{ pid }] = await tx`select pg_backend_pid() as pid`;
    t.equal(await gcJobQueues(tx), 1, 'the cleanup deletes the empty queue');
    adding = addJob(db, 3, 'sync:a');
    await until(() => blocksSomeone(db, pid), 'add_job to wait for the cleanup');
  });
  await adding;
  const [queueOfJob3] = await queueIds('sync:a');
  t.ok(queueOfJob3 && queueOfJob3 !== queueOfJob2, 'add_job created the queue again');
  await until(async () => !!(await executed(3)), 'job 3');
  t.equal((await executed(3)).job_queue_id, queueOfJob3, 'job 3 ran in the new queue');
});

t.test('queue cleanup running in a loop while hundreds of jobs are added to per-sync queues: every job runs, in its queue', async (t) => {
  const { db, addJob, executed, overlaps } = await queueFixture(t);
  let stop = false;
  let passes = 0;
  let deleted = 0;
  let skipped = 0;
  const cleaner = (async () => {
    while (!stop) {
      try {
        deleted += await gcJobQueues(db);
        passes++;
      } catch (e) {
        if ((e as { code?: string }).code !== '55P03') throw e;
        skipped++;
      }
    }
  })();
  // Each of 12 syncs adds its next job once the previous one has run, so its queue keeps going
  // empty (and being deleted) right when the next add_job comes; half of the adds happen inside
  // a transaction that does more work before it commits (as runs.trigger does after enqueueing).
  // Four more adders add in bursts to the same queues.
  const PACED = 12;
  const EACH = 25;
  const BURSTS = 4;
  const BURST = 40;
  const add = async (i: number, q: string) => {
    if (i % 2) await addJob(db, i, q);
    else
      await db.begin(async (tx) => {
        await addJob(tx, i, q);
        await tx`select pg_sleep(${(i % 5) / 1000})`;
      });
  };
  const paced = async (s: number) => {
    for (let k = 0; k < EACH; k++) {
      const i = s * EACH + k;
      await add(i, `sync:q${s}`);
      await until(async () => !!(await executed(i)), `job ${i}`);
    }
  };
  const burst = async (b: number) => {
    for (let k = 0; k < BURST; k++) {
      const i = PACED * EACH + b * BURST + k;
      await add(i, `sync:q${(b * 5 + k) % PACED}`);
    }
  };
  await Promise.all([...Array.from({ length: PACED }, (_, s) => paced(s)), ...Array.from({ length: BURSTS }, (_, b) => burst(b))]);
  const N = PACED * EACH + BURSTS * BURST;
  await until(async () => (await db`select count(*)::int as n from gc_probe_log`)[0]!.n === N, `all ${N} jobs to run`, 180_000);
  stop = true;
  await cleaner;
  t.comment(`cleanup passes: ${passes}, queues deleted: ${deleted}, passes skipped on lock_timeout: ${skipped}`);
  t.ok(deleted >= PACED * EACH / 4, 'the cleanup deleted queues again and again while jobs were being added to them');
  const outside = await db`select i, queue from gc_probe_log where job_queue_id is null order by i`;
  t.same(outside, [], 'no job ran outside its queue');
  t.equal(overlaps(), 0, 'no two jobs of a queue ran at once');
  t.same(await db`select id from graphile_worker._private_jobs`, [], 'no job is left behind');
});
