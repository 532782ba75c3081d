import { run as runGraphileWorker, runMigrations, Logger as GraphileLogger, type Runner, type Task } from 'graphile-worker';
import type { Logger } from 'pino';
import pg from 'pg';
import { inArray } from 'drizzle-orm';
import type { Database } from '../db/client.ts';
import { runs } from '../db/schema.ts';
import type { Services } from '../domain/services.ts';
import { purgeIdempotencyKeys } from '../http/idempotency.ts';
import { RunExecutor, type EngineOptions, type RunHooks } from './executor.ts';
import { gcJobQueues } from './job-queues.ts';
import { realClock } from './rate-limiter.ts';
import { fireSlot } from './scheduler.ts';
import { STAGING_SCHEMA } from './staging.ts';

// The job worker: graphile-worker tasks are thin adapters over the executor and the services.
//   backhaul_run         {runId}   execute (or resume) a run
//   backhaul_schedule    {syncId}  a sync's scheduled slot: trigger unless one is active; plan the next
//   backhaul_maintenance           retention of run records and idempotency keys
// A sweep every few seconds frees runs whose worker died (kill -9): their heartbeat stops, and
// graphile-worker would otherwise keep the job locked for hours. It also deletes job queues that
// have no job left (see gcJobQueues).

export async function migrateWorkerSchema(connectionString: string): Promise<void> {
  await runMigrations({ connectionString, logger: quietLogger() });
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
  /** More tasks (callbacks, alerts) and their crontab lines. */
  tasks?: Record<string, Task>;
  crontab?: string[];
}

export interface Worker {
  runner: Runner;
  executor: RunExecutor;
  sweep(): Promise<number>;
  stop(): Promise<void>;
}

export async function startWorker(o: WorkerOptions): Promise<Worker> {
  const { database, services, logger } = o;
  const clock = o.engine?.clock ?? realClock;
  const executor = new RunExecutor(database, services, o.engine, o.hooks);

  // Worker-pool ids that held jobs in this process (graphile-worker's locked_by), for release at stop.
  const poolIds = new Set<string>();

  const backhaul_run: Task = async (payload, helpers) => {
    const { runId } = payload as { runId: string };
    if (helpers.job.locked_by) poolIds.add(helpers.job.locked_by);
    await executor.execute(runId, { workerId: helpers.job.locked_by ?? 'unknown', signal: helpers.abortSignal, logger });
  };

  const backhaul_schedule: Task = async (payload, helpers) => {
    const { syncId } = payload as { syncId: string };
    await fireSlot({ database, services, logger }, syncId, new Date(clock.now()), helpers.job.run_at);
  };

  const backhaul_maintenance: Task = async () => {
    // By run (the records' primary key leads with it): runs that finished before the cut-off (an active run keeps all its records).
    const removed = await database.sql`
      delete from run_records where run_id in (select id from runs where finished_at < now() - ${`${o.recordRetentionDays} days`}::interval)`;
    const keys = await purgeIdempotencyKeys(database.db);
    // Per-run tables of runs that are gone or finished (e.g. the sync was deleted mid-run).
    const orphans = await database.sql<{ name: string }[]>`
      select t.tablename as name from pg_tables t
      where t.schemaname = ${STAGING_SCHEMA}
        and not exists (select 1 from runs r where r.status in ('queued', 'running')
                        and t.tablename in ('stg_' || r.id, 'plan_' || r.id))`;
    for (const { name } of orphans) await database.sql`drop table if exists ${database.sql(STAGING_SCHEMA)}.${database.sql(name)}`;
    logger.debug({ runRecords: removed.count, idempotencyKeys: keys, stagingTables: orphans.length }, 'maintenance done');
  };

  // Our own pool, so that its errors (e.g. the database stopping first at shutdown) are logged
  // instead of crashing the process, and so that we end it after the runner has stopped.
  const pgPool = new pg.Pool({ connectionString: database.url, max: o.concurrency + 2 });
  const onError = (e: Error) => logger.warn({ err: e }, 'worker database connection error');
  pgPool.on('error', onError);
  pgPool.on('connect', (client) => client.on('error', onError));
  const runner = await runGraphileWorker({
    pgPool,
    concurrency: o.concurrency,
    noHandleSignals: true,
    pollInterval: 1000,
    // Stop taking work at once on shutdown; in-flight batches still finish and checkpoint.
    gracefulShutdownAbortTimeout: 100,
    taskList: { ...o.tasks, backhaul_run, backhaul_schedule, backhaul_maintenance },
    crontab: ['*/10 * * * * backhaul_maintenance', ...(o.crontab ?? [])].join('\n'),
    logger: quietLogger(logger),
  });

  const staleAfter = o.staleAfterMs ?? 15_000;
  async function sweep(): Promise<number> {
    await releaseOrphanedJobs();
    await gcJobQueues(database.sql).catch((e) => logger.debug({ err: e }, 'job queue cleanup skipped'));
    const stale = await database.sql<{ id: string; worker_id: string }[]>`
      select id, worker_id from runs
      where status = 'running' and worker_id is not null and heartbeat_at < now() - ${`${staleAfter} milliseconds`}::interval`;
    if (!stale.length) return 0;
    const workerIds = [...new Set(stale.map((s) => s.worker_id))];
    await database.sql`select graphile_worker.force_unlock_workers(${workerIds}::text[])`;
    // Clear worker_id so the sweep does not repeat until a new worker takes the run.
    await database.db.update(runs).set({ workerId: null }).where(inArray(runs.id, stale.map((s) => s.id)));
    logger.warn({ runs: stale.map((s) => s.id), workerIds }, 'released runs of unresponsive workers');
    return stale.length;
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
          and (r.id is null or (r.status in ('succeeded', 'partially_succeeded', 'failed', 'cancelled')
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

  const sweepTimer = setInterval(() => void sweep().catch((e) => logger.error({ err: e }, 'stale-run sweep failed')), o.sweepEveryMs ?? 5000);
  sweepTimer.unref();
  void sweep().catch(() => {});

  return {
    runner,
    executor,
    sweep,
    async stop() {
      clearInterval(sweepTimer);
      await runner.stop();
      // graphile-worker fails interrupted jobs without waiting for it (and would delay their retry):
      // unlock what this process held so that another worker resumes its runs at once.
      if (poolIds.size) {
        await database.sql`select graphile_worker.force_unlock_workers(${[...poolIds]}::text[])`.catch((e) => logger.warn({ err: e }, 'could not release jobs at shutdown'));
      }
      await pgPool.end();
    },
  };
}

