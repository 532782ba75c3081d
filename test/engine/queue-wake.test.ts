import { EventEmitter } from 'node:events';
import t from 'tap';
import postgres from 'postgres';
import { run, Logger, type TaskList, type WorkerEvents } from 'graphile-worker';
import { migrateWorkerSchema } from '../../src/engine/worker.ts';
import { freshDatabase } from '../helpers/backhaul.ts';

// A job waiting in a named queue (a sync's next run behind its running run) starts when the
// queue is released, not at the worker's next poll: the release wakes the workers
// (installQueueWake). graphile-worker 0.18 looks for its next job without awaiting the completion
// of the last one; the test makes it lose that race every time (it holds the queue's row, so the
// completion commits only after the worker has looked and found nothing), with a poll interval of
// an hour: without the wake, the second job would wait that hour.

const silent = new Logger(() => () => {});

/** A fresh database with graphile-worker's schema and the wake triggers (migrateWorkerSchema). */
async function workerDatabase(t: { teardown(fn: () => unknown): void }, max = 4): Promise<{ url: string; sql: postgres.Sql }> {
  const url = await freshDatabase(t);
  const sql = postgres(url, { max, onnotice: () => {} });
  t.teardown(() => sql.end());
  await migrateWorkerSchema(url, sql);
  return { url, sql };
}

/** One worker slot that polls once an hour: it finds a job only when notified. */
async function hourlyPoller(t: { teardown(fn: () => unknown): void }, url: string, events: WorkerEvents, taskList: TaskList): Promise<void> {
  const runner = await run({ connectionString: url, concurrency: 1, noHandleSignals: true, pollInterval: 3_600_000, logger: silent, events, taskList });
  t.teardown(() => runner.stop());
}

async function until(cond: () => Promise<boolean> | boolean, what: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function once(events: EventEmitter, name: string, pred: (p: any) => boolean = () => true, timeoutMs = 60_000): Promise<any> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      events.off(name, on);
      reject(new Error(`timed out waiting for ${name}`));
    }, timeoutMs);
    const on = (p: any) => {
      if (!pred(p)) return;
      clearTimeout(timer);
      events.off(name, on);
      resolve(p);
    };
    events.on(name, on);
  });
}

t.test('a job queued behind a running job of its queue starts when the queue is released, not at the next poll', async (t) => {
  const { url, sql } = await workerDatabase(t);
  // Installing again (a second worker starting, a restart) keeps one trigger.
  await Promise.all([migrateWorkerSchema(url, sql), migrateWorkerSchema(url, sql)]);
  const [{ n }] = await sql<{ n: number }[]>`
    select count(*)::int as n from pg_trigger
    where tgrelid in ('graphile_worker._private_job_queues'::regclass, 'graphile_worker._private_jobs'::regclass) and tgname like 'backhaul%'`;
  t.equal(n, 2, 'the two triggers, once each, after three installs');

  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const started: string[] = [];
  const events: WorkerEvents = new EventEmitter();
  await hourlyPoller(t, url, events, {
    step: async (payload) => {
      const { name } = payload as { name: string };
      started.push(name);
      if (name === 'first') await gate;
    },
  });
  const add = (name: string) => sql`select graphile_worker.add_job('step', json_build_object('name', ${name}::text), queue_name => 'sync:q')`;

  const firstStarted = once(events, 'job:start', (p) => p.job.payload.name === 'first');
  await add('first');
  await firstStarted;
  // The second job of the queue: its insert's notification finds the queue locked.
  await add('second');

  // Hold the queue's row: the first job's completion (an UPDATE of that row) waits for this transaction.
  const holder = await sql.reserve();
  t.teardown(() => holder.release());
  await holder`begin`;
  await holder`select 1 from graphile_worker._private_job_queues where queue_name = 'sync:q' for update`;

  const lookedAndFoundNothing = once(events, 'worker:getJob:empty');
  release();
  await lookedAndFoundNothing;
  t.same(started, ['first'], 'the worker looked for its next job before the completion committed, and found none');
  await until(async () => {
    const [{ waiting }] = await sql<{ waiting: number }[]>`
      select count(*)::int as waiting from pg_stat_activity where wait_event_type = 'Lock' and query ilike '%_private_job_queues%'`;
    return waiting === 1;
  }, 'the completion to wait for the held row');

  const secondStarted = once(events, 'job:start', (p) => p.job.payload.name === 'second');
  await holder`commit`;
  await secondStarted;
  t.same(started, ['first', 'second'], 'the second job started on the release (the poll is an hour away)');
});

t.test('a job inserted while the release of its queue is uncommitted starts once both have committed', async (t) => {
  // The release checks for a waiting job before it commits: a job inserted and committed in
  // between (its notification finding the queue still locked) would be seen by neither. The job's
  // insert waits for the release instead, and notifies after it.
  const { url, sql } = await workerDatabase(t);
  const started: string[] = [];
  const events: WorkerEvents = new EventEmitter();
  const firstLook = once(events, 'worker:getJob:empty');
  await hourlyPoller(t, url, events, { step: async (payload) => void started.push((payload as { name: string }).name) });
  await firstLook; // the worker's look at start, before any job

  // Job A runs on another worker: the job and its queue are locked by it.
  await sql`select graphile_worker.add_job('step', json_build_object('name', 'A'), queue_name => 'sync:q', job_key => 'A', run_at => now() + interval '1 hour')`;
  await sql.begin(async (tx) => {
    await tx`update graphile_worker._private_jobs set locked_at = now(), locked_by = 'other', run_at = now() where key = 'A'`;
    await tx`update graphile_worker._private_job_queues set locked_at = now(), locked_by = 'other' where queue_name = 'sync:q'`;
  });
  // Its completion (graphile-worker's complete_job statement), not yet committed.
  const completion = await sql.reserve();
  t.teardown(() => completion.release());
  await completion`begin`;
  await completion`
    with j as (delete from graphile_worker._private_jobs where key = 'A' returning *)
    update graphile_worker._private_job_queues q set locked_by = null, locked_at = null
    from j where q.id = j.job_queue_id and q.locked_by = 'other'`;

  // Job B is added meanwhile. Either its insert waits for the completion, or it commits at once and
  // the worker, woken by its notification, finds nothing (the queue is still locked).
  const emptyLook = once(events, 'worker:getJob:empty');
  let added = false;
  const addB = sql`select graphile_worker.add_job('step', json_build_object('name', 'B'), queue_name => 'sync:q')`.then(() => (added = true));
  const insertWaits = async () => {
    const [{ n }] = await sql<{ n: number }[]>`
      select count(*)::int as n from pg_stat_activity where wait_event_type = 'Lock' and query ilike '%add_job%'`;
    return n === 1;
  };
  let lookedFirst = false;
  emptyLook.then(() => (lookedFirst = true), () => {});
  await until(async () => (added && lookedFirst) || (await insertWaits()), 'the insert to wait, or to commit and be looked for');
  t.notOk(added, 'the insert waits for the uncommitted release');

  const bStarted = once(events, 'job:start', (p) => p.job.payload.name === 'B');
  await completion`commit`;
  await addB;
  await bStarted;
  t.same(started, ['B'], 'B started once both committed (the poll is an hour away)');
});

t.test('a queue released with no job waiting sends no notification', async (t) => {
  const { sql } = await workerDatabase(t, 2);
  const heard: string[] = [];
  const listener = await sql.listen('jobs:insert', (p) => heard.push(p));
  t.teardown(() => listener.unlisten());
  await sql`select graphile_worker.add_job('step', '{}'::json, queue_name => 'sync:alone', job_key => 'alone')`;
  await sql`select graphile_worker.add_job('step', '{}'::json, queue_name => 'sync:busy', job_key => 'busy-1')`;
  await sql`select graphile_worker.add_job('step', '{}'::json, queue_name => 'sync:busy', job_key => 'busy-2')`;
  // Lock both queues as a worker would, then release them as its completion would.
  await sql`update graphile_worker._private_job_queues set locked_at = now(), locked_by = 'w'`;
  await sql`delete from graphile_worker._private_jobs where key in ('alone', 'busy-1')`;
  // The add_jobs' own notifications are heard before this marker (commit order).
  await sql`select pg_notify('jobs:insert', 'marker0')`;
  await until(() => heard.includes('marker0'), 'the first marker');
  const before = heard.length;
  await sql`update graphile_worker._private_job_queues set locked_at = null, locked_by = null where queue_name = 'sync:alone'`;
  await sql`update graphile_worker._private_job_queues set locked_at = null, locked_by = null where queue_name = 'sync:busy'`;
  // A marker sent after both releases: notifications arrive in commit order.
  await sql`select pg_notify('jobs:insert', 'marker')`;
  await until(() => heard.includes('marker'), 'the marker');
  t.same(heard.slice(before), ['{"count":1}', 'marker'], 'one wake: for the queue a job waits in');
});
