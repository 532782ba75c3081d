import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { hostname } from 'node:os';
import { run as runGraphileWorker, runMigrations, Logger as GraphileLogger, type Runner, type Task, type WorkerEvents } from 'graphile-worker';
import type { Logger } from 'pino';
import { errorSummary, isConnectionError, type Database, type Sql } from '../db/client.ts';
import { patientPool } from '../db/patient-pool.ts';
import type { Services } from '../domain/services.ts';
import { purgeIdempotencyKeys } from '../http/idempotency.ts';
import { LeaseLostError } from './checkpoint.ts';
import { waitForDatabase } from './db-wait.ts';
import { RunExecutor, type EngineOptions, type RunHooks } from './executor.ts';
import { gcJobQueues, installQueueWake } from './job-queues.ts';
import { realClock } from './rate-limiter.ts';
import { killPoint, stallPoint } from './run-state.ts';
import { fireSequenceSlot, fireSlot } from './scheduler.ts';
import { STAGING_PREFIXES, STAGING_SCHEMA } from './staging.ts';
import { AffinityFlags } from './affinity.ts';

// The job worker: graphile-worker tasks are thin adapters over the executor and the services.
//   backhaul_run         {runId}   execute (or resume) a run
//   backhaul_schedule    {syncId}  a sync's scheduled slot: trigger unless one is active; plan the next
//   backhaul_sequence_advance {sequenceRunId}  record a sequence run's finished step; trigger the next
//   backhaul_sequence_schedule {sequenceId}    a sequence's scheduled slot
//   backhaul_maintenance           retention of run records and idempotency keys
// A sweep every few seconds frees runs whose worker died (kill -9) or stalled: their heartbeat
// stops, and graphile-worker would otherwise keep the job locked for hours. It releases the run's
// own job only — never every job of that worker — and the run's lease stops the old execution
// at its next write. It also deletes job queues that have no job left (see gcJobQueues).
//
// Every worker process also keeps a row in worker_processes (its graphile-worker pool ids, seen
// every processHeartbeatMs). The sweep of any worker deletes the rows of processes not seen for
// processStaleAfterMs and releases every job and queue their pools hold (force_unlock_workers):
// a schedule slot, a sequence step, a run-finished outbox or a delivery job locked by a worker
// that died comes back within seconds, not after graphile-worker's 4-hour lock expiry. A live
// process keeps its row fresh however long its tasks take, so its jobs are never released (a
// process whose event loop stalls longer than processStaleAfterMs is taken for dead: its tasks
// are idempotent, and a run's lease stops its old execution). Pool ids are known when a pool is
// created, just before it takes its first job; a process killed in the few milliseconds before
// its row names the pool leaves that job to the lock expiry.
//
// Scheduled slots have a lane of their own: a second graphile-worker runner in the same process,
// taking backhaul_schedule and backhaul_sequence_schedule jobs only (SCHEDULE_LANE), so that a slot fires when it is due however
// many runs fill the run slots (a fire is one statement, two for a cron schedule; a run can take minutes). The run lane
// does not take schedule jobs, and the schedule lane finds due slots by polling only (see scheduleEvents below).
//
// The control database going away pauses the worker instead of ending the process: connections
// are awaited (patient-pool.ts), a run waits for the database and resumes from its checkpoint,
// and the sweep releases nothing until the database has been back for the stale interval (a
// heartbeat it could not write is no sign that a worker died).

/** graphile-worker's schema (its own migrations), then the triggers that wake workers when a job queue with a waiting job is released (installQueueWake). */
export async function migrateWorkerSchema(connectionString: string, sql: Sql): Promise<void> {
  await runMigrations({ connectionString, logger: quietLogger() });
  await installQueueWake(sql);
}

function quietLogger(log?: Logger): GraphileLogger {
  return new GraphileLogger(() => (level, message, meta) => {
    if (!log) return;
    const l = level === 'error' ? 'error' : level === 'warning' ? 'warn' : 'debug';
    log[l]({ meta }, `graphile-worker: ${message}`);
  });
}

export interface WorkerOptions {
  database: Database;
  services: Services;
  logger: Logger;
  concurrency: number;
  recordRetentionDays: number;
  engine?: EngineOptions;
  hooks?: RunHooks;
  /** A worker whose run shows no heartbeat for this long is considered dead. */
  staleAfterMs?: number;
  sweepEveryMs?: number;
  /** Least time between two reads of other processes' free run slots for job affinity (ms, default 1000; affinity.ts). */
  affinityRefreshMs?: number;
  /** How often this process writes its worker_processes row (ms, default 2000). */
  processHeartbeatMs?: number;
  /** A worker process not seen for this long is gone: its jobs are released (ms, default 20000). */
  processStaleAfterMs?: number;
  /** More tasks (callbacks, alerts) and their crontab lines. */
  tasks?: Record<string, Task>;
  crontab?: string[];
  /** How often an idle run slot looks for a job without a notification (ms, default 1000; tests set an hour to prove jobs are found without polling). */
  pollIntervalMs?: number;
  /** The same for the schedule lane (ms, default SCHEDULE_LANE.pollIntervalMs). */
  schedulePollIntervalMs?: number;
}

/** The schedule lane: concurrent fires, and its poll interval (ms; a slot is due without a notification). */
export const SCHEDULE_LANE = { concurrency: 2, pollIntervalMs: 500 };

export interface Worker {
  runner: Runner;
  /** The schedule lane's runner (backhaul_schedule and backhaul_sequence_schedule only). */
  scheduleRunner: Runner;
  executor: RunExecutor;
  /** graphile-worker's events of the run lane and of the schedule lane. */
  events: { runs: WorkerEvents; schedules: WorkerEvents };
  sweep(): Promise<number>;
  /** Settles when the sweep started with the worker has ended (whatever its outcome). */
  firstSweep: Promise<void>;
  stop(): Promise<void>;
}

export async function startWorker(o: WorkerOptions): Promise<Worker> {
  const { database, services, logger } = o;
  const clock = o.engine?.clock ?? realClock;
  const executor = new RunExecutor(database, services, o.engine, o.hooks);

  // Worker-pool ids that held jobs in this process (graphile-worker's locked_by), for release at stop.
  const poolIds = new Set<string>();
  // Runs executing in this process (the sweep never releases them: they are alive here).
  const activeRuns = new Set<string>();
  // Jobs whose task ended here, by when (ms): a job still locked by this process well after its
  // task ended lost its completion to a dropped connection (graphile-worker does not await it).
  const tasksEnded = new Map<string, number>();
  const tasksRunning = new Set<string>();
  let lastPoolError = '';

  const backhaul_run: Task = async (payload, helpers) => {
    const { runId } = payload as { runId: string };
    activeRuns.add(runId);
    try {
      for (let again = 0; ; again++) {
        try {
          await executor.execute(runId, { workerId: helpers.job.locked_by ?? 'unknown', signal: helpers.abortSignal, logger });
          return;
        } catch (e) {
          // After 10 executions in a row cut short this way, the job fails and graphile-worker
          // retries it later (a connection error that is not an outage must not spin).
          if (e instanceof LeaseLostError || !isConnectionError(e) || helpers.abortSignal.aborted || again >= 10) throw e;
          // The control database went away: wait for it, then execute again from the last marker
          // (a new lease; what was checkpointed is not sent again).
          logger.warn({ runId, cause: errorSummary(e) }, 'control database unavailable during a run: waiting for it');
          await waitForDatabase(database.sql, { signal: helpers.abortSignal });
          if (again > 0) await new Promise((r) => setTimeout(r, Math.min(60_000, 500 * 2 ** again)));
          if (helpers.abortSignal.aborted) throw e;
          logger.info({ runId }, 'control database back: resuming the run');
        }
      }
    } finally {
      activeRuns.delete(runId);
    }
  };

  const backhaul_schedule: Task = async (payload, helpers) => {
    const { syncId } = payload as { syncId: string };
    killPoint('schedule:fire', syncId);
    await stallPoint('schedule:fire', syncId, helpers.abortSignal);
    await fireSlot({ database, services, logger }, syncId, new Date(clock.now()), helpers.job.run_at);
  };

  const backhaul_sequence_advance: Task = async (payload) => {
    await services.sequences.advance((payload as { sequenceRunId: string }).sequenceRunId);
  };

  const backhaul_sequence_schedule: Task = async (payload, helpers) => {
    const { sequenceId } = payload as { sequenceId: string };
    killPoint('schedule:fire', sequenceId);
    await stallPoint('schedule:fire', sequenceId, helpers.abortSignal);
    await fireSequenceSlot({ database, services, logger }, sequenceId, new Date(clock.now()), helpers.job.run_at);
  };

  const backhaul_maintenance: Task = async () => {
    // By run (the records' primary key leads with it): runs that finished before the cut-off (an active run keeps all its records).
    const removed = await database.sql`
      delete from run_records where run_id in (select id from runs where finished_at < now() - ${`${o.recordRetentionDays} days`}::interval)`;
    const removedBatches = await database.sql`
      delete from run_batches where run_id in (select id from runs where finished_at < now() - ${`${o.recordRetentionDays} days`}::interval)`;
    const keys = await purgeIdempotencyKeys(database.db);
    // Backstop for sequence runs: one whose current step's run is terminal (or gone) gets its
    // advance job again (the finish enqueues it in its own transaction; this only repairs).
    await database.sql`
      select graphile_worker.add_job('backhaul_sequence_advance', json_build_object('sequenceRunId', sr.id), job_key => 'sequence-advance:' || sr.id, max_attempts => 25)
      from sequence_runs sr left join runs r on r.id = sr.current_run_id
      where sr.status = 'running' and (r.id is null or r.status in ('succeeded', 'partially_succeeded', 'failed', 'cancelled'))`;
    // Per-run tables of runs that are gone or finished (e.g. the sync was deleted mid-run).
    const orphans = await database.sql<{ name: string }[]>`
      select t.tablename as name from pg_tables t
      where t.schemaname = ${STAGING_SCHEMA}
        and not exists (select 1 from runs r where r.status in ('queued', 'running')
                        and t.tablename in (select prefix || r.id from unnest(${STAGING_PREFIXES}::text[]) as prefix))`;
    // Cascade: a plan that is a view over a run's staged rows (diff.ts) goes with them.
    for (const { name } of orphans) await database.sql`drop table if exists ${database.sql(STAGING_SCHEMA)}.${database.sql(name)} cascade`;
    logger.debug({ runRecords: removed.count, runBatches: removedBatches.count, idempotencyKeys: keys, stagingTables: orphans.length }, 'maintenance done');
  };

  // Our own pool, so that its errors (e.g. the database stopping first at shutdown) are logged
  // instead of crashing the process, so that it waits for a database that went away, and so that
  // we end it after the runner has stopped. Errors are logged as one short line (a pg error
  // carries its whole client object).
  const pgPool = patientPool(
    { connectionString: database.url, max: o.concurrency + SCHEDULE_LANE.concurrency + 2 },
    {
      onWait: (e) => logger.warn({ cause: errorSummary(e) }, 'control database unavailable: the worker waits for it'),
      onBack: () => logger.info('control database back: the worker resumes'),
    },
  );
  const onError = (e: Error) => {
    // One line per distinct error, not one per pooled connection.
    if (lastPoolError === errorSummary(e)) return;
    lastPoolError = errorSummary(e);
    logger.warn({ cause: errorSummary(e) }, 'worker database connection error');
  };
  pgPool.on('error', onError);
  pgPool.on('connect', (client) => {
    client.on('error', onError);
    lastPoolError = '';
  });
  // This process's liveness row (see the top of this file), written before any pool takes a job.
  const processId = randomUUID();
  const heartbeatEvery = o.processHeartbeatMs ?? 2000;
  const processStaleAfter = Math.max(o.processStaleAfterMs ?? 20_000, heartbeatEvery * 3);
  const registeredPools = new Set<string>();
  // Tasks running in the run lane: the heartbeat tells other processes whether a slot is free
  // here (affinity.ts), and beats at once when the last slot is taken or the first one freed.
  let runLaneBusy = 0;
  async function beat(): Promise<void> {
    const idle = Math.max(0, o.concurrency - runLaneBusy);
    await database.sql`
      insert into worker_processes (id, pool_ids, host, pid, idle_run_slots) values (${processId}, ${[...registeredPools]}::text[], ${hostname()}, ${process.pid}, ${idle})
      on conflict (id) do update set pool_ids = excluded.pool_ids, idle_run_slots = excluded.idle_run_slots, last_seen_at = now()`;
  }
  // Once stopping, no beat: a task ending during the stop would write the row back after it was deleted.
  let stopping = false;
  const beatLogged = () =>
    void (stopping ? Promise.resolve() : beat()).catch((e) => {
      if (isConnectionError(e)) logger.debug({ cause: errorSummary(e) }, 'worker heartbeat skipped: control database unavailable');
      else logger.error({ err: e }, 'worker heartbeat failed');
    });
  await beat();
  const heartbeatTimer = setInterval(beatLogged, heartbeatEvery);
  heartbeatTimer.unref();
  // One emitter per lane (tests watch them); both record their pools for the heartbeat.
  const events: WorkerEvents = new EventEmitter();
  const scheduleEvents: WorkerEvents = new EventEmitter();
  for (const e of [events, scheduleEvents]) {
    e.on('pool:create', ({ workerPool }) => {
      registeredPools.add(workerPool.id);
      beatLogged();
    });
  }
  // The schedule lane does not answer job notifications; it finds its slots by polling
  // (SCHEDULE_LANE.pollIntervalMs). graphile-worker's job fetch locks every available named job
  // queue row (FOR UPDATE SKIP LOCKED, whatever tasks the pool takes): woken by the same
  // notification as the run lane, the schedule lane's fetch held the sync's queue just when the
  // run lane looked for the run just triggered, which then found nothing and waited for its next
  // poll (measured: trigger-to-start p95 ~700 ms against a median of ~20 ms). A slot is planned
  // ahead (run_at in the future): the notification of its insert never made it due sooner.
  scheduleEvents.on('pool:create', ({ workerPool }) => {
    workerPool.nudge = () => {};
  });

  // Every task notes when it ran (see tasksEnded).
  const tracked = (task: Task): Task => async (payload, helpers) => {
    if (helpers.job.locked_by) poolIds.add(helpers.job.locked_by);
    tasksRunning.add(helpers.job.id);
    tasksEnded.delete(helpers.job.id);
    try {
      return await task(payload, helpers);
    } finally {
      tasksRunning.delete(helpers.job.id);
      tasksEnded.set(helpers.job.id, Date.now());
    }
  };
  const inRunLane = (task: Task): Task => async (payload, helpers) => {
    if (++runLaneBusy === o.concurrency) beatLogged();
    try {
      return await task(payload, helpers);
    } finally {
      if (runLaneBusy-- === o.concurrency) beatLogged();
    }
  };
  const taskList: Record<string, Task> = Object.fromEntries(
    Object.entries({ ...o.tasks, backhaul_run, backhaul_sequence_advance, backhaul_maintenance }).map(([name, task]) => [name, inRunLane(tracked(task))]),
  );
  // A sync's run is left to the live process with a free slot that ran its last run (it keeps the
  // sync's comparison table): affinity.ts. Gone after three heartbeats missed.
  const affinity = new AffinityFlags(database.sql, { processId, refreshMs: o.affinityRefreshMs ?? 1000, freshMs: heartbeatEvery * 3 });
  const runner = await runGraphileWorker({
    pgPool,
    concurrency: o.concurrency,
    noHandleSignals: true,
    pollInterval: o.pollIntervalMs ?? 1000,
    // Stop taking work at once on shutdown; in-flight batches still finish and checkpoint.
    gracefulShutdownAbortTimeout: 100,
    taskList,
    events,
    forbiddenFlags: affinity.forbidden,
    crontab: ['*/10 * * * * backhaul_maintenance', ...(o.crontab ?? [])].join('\n'),
    logger: quietLogger(logger),
  });
  const scheduleRunner = await runGraphileWorker({
    pgPool,
    concurrency: SCHEDULE_LANE.concurrency,
    noHandleSignals: true,
    pollInterval: o.schedulePollIntervalMs ?? SCHEDULE_LANE.pollIntervalMs,
    gracefulShutdownAbortTimeout: 100,
    taskList: { backhaul_schedule: tracked(backhaul_schedule), backhaul_sequence_schedule: tracked(backhaul_sequence_schedule) },
    events: scheduleEvents,
    logger: quietLogger(logger),
  }).catch(async (e) => {
    await runner.stop();
    throw e;
  });

  const staleAfter = o.staleAfterMs ?? 15_000;
  // Since when the sweep has reached the database without interruption (undefined: it has not
  // since it last failed to). At start the database just answered (migrations): taken as up.
  let dbUpSince: number | undefined = Date.now() - staleAfter;
  async function sweep(): Promise<number> {
    try {
      const released = await sweepOnce();
      dbUpSince ??= Date.now();
      return released;
    } catch (e) {
      if (isConnectionError(e)) dbUpSince = undefined;
      throw e;
    }
  }
  async function sweepOnce(): Promise<number> {
    await database.sql`select 1`;
    // Heartbeats could not be written while the database was away: judge them only once it has
    // been back for the stale interval.
    if (dbUpSince === undefined || Date.now() - dbUpSince < staleAfter) return 0;
    await releaseOrphanedJobs();
    await releaseLostCompletions();
    await gcJobQueues(database.sql).catch((e) => logger.debug({ err: e }, 'job queue cleanup skipped'));
    await releaseDeadProcesses();
    return releaseStaleRuns();
  }
  /**
   * Worker processes not seen for processStaleAfter (they died: kill -9, host lost): delete their
   * rows and release every job and job queue their pools hold, with graphile-worker's
   * force_unlock_workers (graphile-worker 0.18, sql/000016.sql; the SQL behind WorkerUtils.forceUnlockWorkers).
   * The delete claims a dead process for one sweep when several workers sweep at once. Returns
   * the released job ids.
   */
  async function releaseDeadProcesses(): Promise<string[]> {
    const released = await database.sql.begin(async (tx) => {
      const dead = await tx<{ id: string; pool_ids: string[] }[]>`
        delete from worker_processes
        where last_seen_at < now() - ${`${processStaleAfter} milliseconds`}::interval and id <> ${processId}
        returning id, pool_ids`;
      const pools = dead.flatMap((d) => d.pool_ids);
      if (!pools.length) return { dead, jobs: [] as string[] };
      const jobs = await tx<{ id: string }[]>`select id::text as id from graphile_worker._private_jobs where locked_by = any(${pools}::text[])`;
      await tx`select graphile_worker.force_unlock_workers(${pools}::text[])`;
      return { dead, jobs: jobs.map((j) => j.id) };
    });
    if (released.dead.length) {
      logger.warn({ processes: released.dead.map((d) => d.id), jobs: released.jobs }, 'released the jobs of worker processes that stopped answering');
    }
    return released.jobs;
  }
  /**
   * Runs whose execution shows no heartbeat for the stale interval (its worker died, or stalls):
   * release exactly each run's job (job key `run:<id>`) and its queue, where the silent worker
   * still holds them, so that another worker takes the run over — with a new lease, which stops
   * the old execution at its next write if it wakes up. The silent worker's other jobs are left
   * alone (a stalled worker keeps them; a dead one's come back through graphile-worker's own
   * lock expiry or releaseOrphanedJobs). Runs executing in this process are alive by definition.
   */
  async function releaseStaleRuns(): Promise<number> {
    const released = await database.sql<{ id: string; worker_id: string; job_id: string | null }[]>`
      with stale as (
        select r.id, r.worker_id from runs r
        where r.status = 'running' and r.worker_id is not null
          and r.heartbeat_at < now() - ${`${staleAfter} milliseconds`}::interval
          and r.id <> all(${[...activeRuns]}::text[])
        for update skip locked
      ), held as (
        select j.id, j.job_queue_id, s.worker_id, s.id as run_id
        from stale s join graphile_worker._private_jobs j on j.key = 'run:' || s.id and j.locked_by = s.worker_id
      ), queues as (
        update graphile_worker._private_job_queues q set locked_at = null, locked_by = null
        from held h where q.id = h.job_queue_id and q.locked_by = h.worker_id
      ), jobs as (
        update graphile_worker._private_jobs j set locked_at = null, locked_by = null
        from held h where j.id = h.id
        returning j.id, h.run_id
      ), cleared as (
        -- worker_id cleared so that the sweep does not repeat until a worker takes the run again
        update runs r set worker_id = null from stale s where r.id = s.id
      )
      select s.id, s.worker_id, (select jobs.id::text from jobs where jobs.run_id = s.id) as job_id from stale s`;
    if (!released.length) return 0;
    logger.warn({ runs: released.map((r) => ({ runId: r.id, workerId: r.worker_id, jobId: r.job_id })) }, 'released runs whose worker stopped answering');
    return released.length;
  }
  /**
   * A job whose task ended in this process a while ago but that this process still holds lost
   * its completion (graphile-worker completes and fails jobs without awaiting it; a dropped
   * connection loses the statement): release it so that it runs again (tasks are idempotent), as
   * graphile-worker would after its 4-hour lock expiry.
   */
  async function releaseLostCompletions(): Promise<void> {
    const cutoff = Date.now() - Math.max(30_000, staleAfter);
    const due = [...tasksEnded].filter(([id, at]) => at < cutoff && !tasksRunning.has(id)).map(([id]) => id);
    if (!due.length || !poolIds.size) return;
    const released = await database.sql<{ id: string }[]>`
      with lost as (
        select id, job_queue_id, locked_by from graphile_worker._private_jobs
        where id = any(${due}::bigint[]) and locked_by = any(${[...poolIds]}::text[])
        for update skip locked
      ), queues as (
        update graphile_worker._private_job_queues q set locked_at = null, locked_by = null
        from lost l where q.id = l.job_queue_id and q.locked_by = l.locked_by
      )
      update graphile_worker._private_jobs j set locked_at = null, locked_by = null
      from lost l where j.id = l.id
      returning j.id::text as id`;
    for (const id of due) tasksEnded.delete(id);
    if (released.length) logger.warn({ jobs: released.map((r) => r.id) }, 'released jobs whose completion was lost with the database connection');
  }
  /**
   * A worker that died after its run became terminal (while finishing hooks ran) leaves a locked
   * job whose run has no heartbeat to go stale; the sync's queue would stay blocked until
   * graphile-worker's 4-hour lock expiry. Release exactly those jobs (and their queue) once the
   * run has been finished for a while; re-running them is a no-op for a finished run.
   */
  async function releaseOrphanedJobs(): Promise<void> {
    const released = await database.sql<{ id: string }[]>`
      with orphaned as (
        select j.id, j.job_queue_id, j.locked_by
        from graphile_worker._private_jobs j
        join graphile_worker._private_tasks t on t.id = j.task_id and t.identifier = 'backhaul_run'
        left join runs r on r.id = j.payload->>'runId'
        where j.locked_by is not null
          and j.locked_at < now() - ${`${Math.max(staleAfter * 4, 60_000)} milliseconds`}::interval
          and (r.id is null
               -- a worker claims its run as soon as it takes the job: a run still queued under a
               -- job locked this long was never started (the fetch's answer was lost)
               or r.status = 'queued'
               or (r.status in ('succeeded', 'partially_succeeded', 'failed', 'cancelled')
                   and r.finished_at < now() - ${`${staleAfter * 4} milliseconds`}::interval))
      ), queues as (
        update graphile_worker._private_job_queues q set locked_at = null, locked_by = null
        from orphaned o where q.id = o.job_queue_id and q.locked_by = o.locked_by
      )
      update graphile_worker._private_jobs j set locked_at = null, locked_by = null
      from orphaned o where j.id = o.id
      returning j.id`;
    if (released.length) logger.warn({ jobs: released.map((r) => r.id) }, 'released jobs of finished runs left locked by a dead worker');
  }

  const sweepTimer = setInterval(
    () =>
      void sweep().catch((e) => {
        if (isConnectionError(e)) logger.debug({ cause: errorSummary(e) }, 'stale-run sweep skipped: control database unavailable');
        else logger.error({ err: e }, 'stale-run sweep failed');
      }),
    o.sweepEveryMs ?? 5000,
  );
  sweepTimer.unref();
  const firstSweep = sweep().then(
    () => {},
    () => {},
  );

  return {
    runner,
    scheduleRunner,
    executor,
    events: { runs: events, schedules: scheduleEvents },
    sweep,
    firstSweep,
    async stop() {
      clearInterval(sweepTimer);
      clearInterval(heartbeatTimer);
      stopping = true;
      // Nothing waits for a database that is away any more: stopping must not hang on it.
      pgPool.stopWaiting();
      await Promise.all([runner.stop(), scheduleRunner.stop()]);
      // graphile-worker fails interrupted jobs without waiting for it (and would delay their retry):
      // unlock what this process held so that another worker resumes its runs at once.
      if (poolIds.size) {
        await database.sql`select graphile_worker.force_unlock_workers(${[...poolIds]}::text[])`.catch((e) => logger.warn({ err: e }, 'could not release jobs at shutdown'));
      }
      await database.sql`delete from worker_processes where id = ${processId}`.catch(() => {});
      await pgPool.end();
    },
  };
}

