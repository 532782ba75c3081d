import type { Logger } from 'pino';
import type { MappingSpec } from '../connectors/mapping.ts';
import type { DestinationConnector, SourceConnector } from '../connectors/types.ts';
import { errorSummary, isConnectionError, type Database } from '../db/client.ts';
import type { RunRow } from '../domain/runs.ts';
import type { Services } from '../domain/services.ts';
import type { Redactor } from '../lib/redact.ts';
import { syncView } from '../domain/syncs.ts';
import { AppError, ConnectorError } from '../errors.ts';
import { raceAbort } from './abort.ts';
import { AbortedError, type BatchResult } from './batch.ts';
import { lastRecordedBatch, LeaseLostError } from './checkpoint.ts';
import { CancelledError, deliverPhase } from './deliver.ts';
import { buildPlan, markDuplicates, planSample, snapshotSize } from './diff.ts';
import { checkThresholds } from './guards.ts';
import { planBaseBatch, planSize } from './plan.ts';
import { FingerprintCache, keysWritten, maxKeys, type TableStamp } from './fingerprint-cache.ts';
import { FINGERPRINT_INDEX_MAX, type FingerprintIndex } from './fingerprint-index.ts';
import { queryPhase, SCAN_QUEUE_BYTES, type QueryStats } from './query.ts';
import { realClock, type Clock } from './rate-limiter.ts';
import { recordInvalid, unbundleRecords } from './records.ts';
import { COUNTS_NOTIFY_MS, RunState } from './run-state.ts';
import { StagingLostError, stagingIntact, stagingNames, tableExists, type StagedDistinct } from './staging.ts';
import { emptyCounts, TERMINAL, type Phase, type RunCounts, type RunStatus } from './status.ts';

// Executes one run, resumably, as its phases: query.ts → diff.ts (+ guards.ts) → deliver.ts
// (+ batch.ts, checkpoint.ts) → finalizing (run-state.ts). Each phase leaves a marker on the run
// row (staged_at, planned_at); a run picked up again after a crash continues from the last marker
// and sends only plan rows still pending: acknowledged batches were checkpointed and are skipped.
//
// Bounded: every wait is raced against the run's signals. Cancel stops querying and diffing at
// once and delivery between batches; shutdown releases the run to be resumed; the run's deadline
// (`runTimeoutMs`) fails it as retryable. Each execution holds a lease (runs.attempts): one that
// lost it — another worker took the run over — writes nothing more.

export interface EngineOptions {
  clock?: Clock;
  retryBaseMs?: number;
  retryMaxMs?: number;
  heartbeatMs?: number;
  /** Rows per source batch while querying. */
  readBatchSize?: number;
  /** A run's overall deadline in milliseconds (default 6 hours): no run holds a worker slot longer. */
  runTimeoutMs?: number;
  /** Least time between a run's notifications that change neither status nor phase (ms; RunState). */
  countsNotifyMs?: number;
  /**
   * Snapshot records up to which an incremental run compares its key scan in memory (default
   * FINGERPRINT_INDEX_MAX, 2,000,000); above, or at 0, the comparison is done in SQL.
   */
  keyIndexMax?: number;
  /** Key-scan bytes held while the snapshot's fingerprint index loads (default 16 MB; tests). */
  scanQueueBytes?: number;
  /**
   * Memory the comparison tables kept between a sync's runs may hold together, in bytes
   * (fingerprint-cache.ts; default 128 MB; 0: none kept, every incremental run loads its table).
   */
  fingerprintCacheBytes?: number;
}

export interface RunContext {
  workerId: string;
  signal: AbortSignal;
  logger: Logger;
}

/**
 * Extension points for callbacks, alerts, metrics and the row debugger. Hooks run in the worker;
 * a hook that throws is logged and never fails the run.
 */
export interface RunHooks {
  /** The run started executing (first attempt only, not on resumption). */
  runStarted?: (run: RunRow) => Promise<void>;
  /** The run reached a terminal status. */
  runFinished?: (run: RunRow) => Promise<void>;
  /** A batch was acknowledged and checkpointed: its outcomes and the requests that carried it. */
  batchDelivered?: (run: RunRow, batch: number, result: BatchResult) => Promise<void>;
  /** A whole request was retried (code: rate_limited, http_503, …). */
  retry?: (syncId: string, code: string) => void;
  /** The querying phase read the model: how (incremental or full) and how many rows it read in full. */
  queried?: (run: RunRow, stats: QueryStats) => void;
  /** A phase finished, with its duration. */
  phaseFinished?: (run: RunRow, phase: Phase, ms: number) => void;
}

/**
 * Samples sync_snapshots for the planner (ANALYZE: ~30,000 rows whatever the table's size) after
 * a run that wrote a large share of its records (over 10,000 and a fifth of the rows it queried).
 * Autovacuum would get to it a minute or more later; until then the next run's plans read stale
 * statistics (a table never analyzed reads as empty): measured at a million records, the
 * incremental run's read of the snapshot's fingerprints took a bitmap scan of the key index,
 * 1.06 s, instead of a sequential scan, 0.57 s. Best effort: skipped when the table is locked
 * by another ANALYZE or a VACUUM; a failure is logged, not raised.
 */
async function refreshSnapshotStatistics(sql: Database['sql'], counts: RunCounts, log: Logger): Promise<void> {
  const s = counts.succeeded;
  const written = s.insert + s.update + s.delete;
  if (written <= 10_000 || written * 5 < counts.queried) return;
  // SKIP_LOCKED: never waits behind another worker's ANALYZE or a manual VACUUM (autovacuum
  // would yield; these would not).
  await sql`analyze (skip_locked) sync_snapshots`.catch((e: unknown) => log.warn({ err: e }, 'analyze sync_snapshots failed'));
}

/** The run's deadline passed: it fails, retryable. */
export class RunTimeoutError extends ConnectorError {
  constructor(ms: number) {
    super('run_timeout', `The run did not finish within its deadline (${Math.round(ms / 1000)} s) and was stopped; what was acknowledged stays delivered.`, {
      classification: 'retryable',
      hint: 'A source or destination stopped answering, or the run is larger than the deadline allows (BACKHAUL_RUN_TIMEOUT_SECONDS).',
    });
  }
}

export class RunExecutor {
  private readonly database: Database;
  private readonly services: Services;
  private readonly opts: Required<EngineOptions>;
  private readonly hooks: RunHooks;
  /** Comparison tables kept between a sync's runs on this worker. */
  readonly fingerprintCache: FingerprintCache;

  constructor(database: Database, services: Services, opts: EngineOptions = {}, hooks: RunHooks = {}) {
    this.database = database;
    this.services = services;
    this.hooks = hooks;
    this.opts = {
      clock: opts.clock ?? realClock,
      retryBaseMs: opts.retryBaseMs ?? 1000,
      retryMaxMs: opts.retryMaxMs ?? 60_000,
      heartbeatMs: opts.heartbeatMs ?? 2000,
      readBatchSize: opts.readBatchSize ?? 5000,
      runTimeoutMs: opts.runTimeoutMs ?? 6 * 3600_000,
      countsNotifyMs: opts.countsNotifyMs ?? COUNTS_NOTIFY_MS,
      keyIndexMax: opts.keyIndexMax ?? FINGERPRINT_INDEX_MAX,
      scanQueueBytes: opts.scanQueueBytes ?? SCAN_QUEUE_BYTES,
      fingerprintCacheBytes: opts.fingerprintCacheBytes ?? 128 * 1024 * 1024,
    };
    this.fingerprintCache = new FingerprintCache(this.opts.fingerprintCacheBytes);
  }

  private get sql() {
    return this.database.sql;
  }

  async execute(runId: string, ctx: RunContext): Promise<void> {
    const state = await RunState.claim(this.database, runId, ctx.workerId, this.hooks, this.opts.countsNotifyMs);
    if (!state) return; // deleted, finished, or cancelled before it started
    const log = ctx.logger.child({ runId, syncId: state.run.syncId });
    if (state.firstStart) await hook(log, () => this.hooks.runStarted?.(state.run));
    const counts: RunCounts = { ...emptyCounts(), ...(state.run.counts as RunCounts) };

    // Signals: `stopped` (shutdown, deadline, lost lease) ends every phase and releases or fails
    // the run; `cancelled` also ends querying and diffing at once (delivery stops between batches).
    const stopped = new AbortController();
    const cancelled = new AbortController();
    const onShutdown = () => stopped.abort(new AbortedError());
    if (ctx.signal.aborted) onShutdown();
    else ctx.signal.addEventListener('abort', onShutdown, { once: true });
    const deadline = setTimeout(() => stopped.abort(new RunTimeoutError(this.opts.runTimeoutMs)), this.opts.runTimeoutMs);
    const heartbeat = setInterval(() => {
      raceAbort(this.sql`update runs set heartbeat_at = now() where id = ${runId} and attempts = ${state.lease} returning cancel_requested_at`, AbortSignal.timeout(this.opts.heartbeatMs * 5))
        .then((r) => {
          if (!r.length) stopped.abort(new LeaseLostError(runId));
          else if (r[0].cancel_requested_at) cancelled.abort(new CancelledError());
        })
        .catch(() => {});
    }, this.opts.heartbeatMs);
    heartbeat.unref();
    const anySignal = AbortSignal.any([stopped.signal, cancelled.signal]);
    const checkStop = () => {
      if (anySignal.aborted) throw anySignal.reason;
    };

    let source: SourceConnector | undefined;
    let dest: DestinationConnector | undefined;
    // Every secret of the destination (in the forms a service may echo it) is removed from what
    // the run records: rejected rows' messages and the run's error.
    let redact: Redactor | undefined;
    try {
      const syncRow = await this.services.syncs.row(this.database.db, state.run.workspaceId, state.run.syncId);
      const sync = syncView(syncRow);
      const model = await this.services.models.row(this.database.db, state.run.workspaceId, sync.modelId);
      const srcConn = await this.services.connections.row(this.database.db, state.run.workspaceId, model.connectionId);
      const destConn = await this.services.connections.row(this.database.db, state.run.workspaceId, sync.destinationId);
      dest = this.services.connections.openDestination(destConn);
      redact = dest.redactor ?? this.services.connections.redactorFor(destConn);
      if (state.run.snapshotVersion !== null && state.run.snapshotVersion !== syncRow.snapshotVersion) {
        throw new ConnectorError('sync_repointed', "The sync's destination, object, match key or mode changed since this run was planned.", {
          classification: 'fatal',
          hint: 'Trigger a new run: it writes every row to the new place.',
        });
      }

      /** The table this execution's comparison used, and what it was current at (fingerprint-cache.ts). */
      let table: { index: FingerprintIndex; stamp: TableStamp } | undefined;
      let tableVersion = -1;
      let planBuiltNow = false;
      let planBase = 0;
      /** The snapshot's records, when querying counted them (QueryStats.snapshotRecords). */
      let snapshotRecords: number | undefined;
      /** This execution's read copied the staged rows' records (QueryStats.recordsCopied). */
      let recordsCopied = false;
      /** What this execution's read proved of the staged rows (QueryStats.distinct). */
      let distinct: StagedDistinct | undefined;
      const run0 = state.run;
      // Staged rows and a plan are trusted only while intact: a crash or failover of PostgreSQL
      // empties them (unlogged) and the run then reads the model again (staging.ts).
      const intact = (run0.stagedAt || run0.plannedAt) && (await stagingIntact(this.sql, runId));
      if (!intact && (run0.stagedAt || run0.plannedAt)) log.warn('the run\'s staged rows were lost (PostgreSQL crashed or failed over): the model is read again');
      const plannedOk = intact && run0.plannedAt && (await tableExists(this.sql, stagingNames(runId).plan)) && (await planSize(this.sql, runId)) === run0.plannedTotal;
      if (!plannedOk) {
        const stagedOk = intact && run0.stagedAt && (await tableExists(this.sql, stagingNames(runId).stg));
        if (!stagedOk) {
          await state.enterPhase('querying');
          source = this.services.connections.openSource(srcConn);
          const fields = await raceAbort(dest.fields(sync.object), anySignal);
          const mappings: MappingSpec[] = (await this.services.mappings.allForSync(this.database.db, run0.workspaceId, run0.syncId)).map((m) => ({
            destinationField: m.destinationField,
            source: m.source,
          }));
          const read = await queryPhase({
            sql: this.sql,
            run: run0,
            model,
            matchKey: sync.matchKey,
            mappings,
            fields,
            source,
            dest,
            counts,
            readBatchSize: this.opts.readBatchSize,
            keyIndexMax: this.opts.keyIndexMax,
            scanQueueBytes: this.opts.scanQueueBytes,
            fullResync: run0.fullResync,
            signal: anySignal,
            fingerprintTable: {
              take: async () => {
                const t = await this.fingerprintCache.take(this.sql, sync.id, { id: runId, lease: state.lease });
                tableVersion = t.snapshotVersion;
                return t.index;
              },
              compared: (index) => (table = { index, stamp: { snapshotVersion: tableVersion, claimSeq: Number(state.run.claimSeq ?? 0) } }),
            },
          });
          if (!read.incremental) this.fingerprintCache.forget(sync.id);
          snapshotRecords = read.snapshotRecords;
          recordsCopied = read.recordsCopied === true;
          distinct = read.distinct;
          log.info({ read }, read.incremental ? `incremental read: ${read.rowsFetched} of ${read.keysScanned} rows read in full` : `full read: ${read.rowsFetched} rows`);
          try {
            this.hooks.queried?.(state.run, read);
          } catch (e) {
            log.warn({ err: e }, "queried hook failed");
          }
          void source.close().catch(() => {});
          source = undefined;
          checkStop();
          await state.update({ stagedAt: new Date(), counts });
        }
        await state.enterPhase('diffing');
        const dups = await markDuplicates(this.sql, runId, sync.id, undefined, { recordsCopied, distinct });
        if (dups.length) {
          counts.invalid += dups.length;
          await recordInvalid(this.sql, run0, dups);
        }
        checkStop();
        const [{ base }] = await this.sql<{ base: number }[]>`select coalesce(${lastRecordedBatch(this.sql, runId)}, 0)::int as base`;
        // A plan rebuilt after some batches were recorded records by row, with conflict handling:
        // the run's bulk records move to run_records first (one place per row and operation).
        if (base > 0) await unbundleRecords(this.sql, runId);
        // The snapshot's size before the plan changes anything (the thresholds' base), counted
        // beside the plan on another connection: only this run writes the sync's snapshot, and
        // the plan's one write (fingerprints of unchanged payloads) changes no record's count.
        // (An in-memory comparison of this execution counted them while loading them.)
        const counting = snapshotRecords !== undefined ? Promise.resolve(snapshotRecords) : snapshotSize(this.sql, sync.id);
        counting.catch(() => {});
        const { planned, total } = await buildPlan(this.sql, runId, { syncId: sync.id, mode: sync.mode, fullResync: run0.fullResync, dryRun: run0.dryRun, matchField: sync.matchKey.destinationField, baseBatch: base });
        const before = await counting;
        planBuiltNow = true;
        planBase = base;
        // A plan rebuilt after its table was lost keeps the counts of what was already delivered.
        counts.planned = {
          insert: planned.insert + counts.succeeded.insert,
          update: planned.update + counts.succeeded.update,
          delete: planned.delete + counts.succeeded.delete,
        };
        checkStop();
        // The change thresholds, before the plan is marked built: a run resumed after a crash
        // never finds a plan that skipped them. (A plan rebuilt after some batches were
        // delivered was checked when it was first built.)
        if (base === 0) {
          await state.update({ counts });
          checkThresholds(sync.changeThresholds, { planned, snapshot: before, queried: counts.queried, allowDeletions: run0.allowDeletions, fullResync: run0.fullResync });
        }
        await state.update({ plannedAt: new Date(), plannedTotal: total, counts, snapshotVersion: syncRow.snapshotVersion });
      }
      if (state.run.dryRun) {
        await state.update({ planSample: await planSample(this.sql, runId, 20) });
        await state.finish(counts.invalid > 0 ? 'partially_succeeded' : 'succeeded', null, counts);
        log.info({ counts }, 'dry run finished');
        return;
      }

      await state.enterPhase('delivering');
      if (!planBuiltNow) planBase = await planBaseBatch(this.sql, runId);
      await deliverPhase({
        sql: this.sql,
        run: state.run,
        lease: state.lease,
        snapshotVersion: state.run.snapshotVersion ?? syncRow.snapshotVersion,
        sync,
        dest,
        destConnId: destConn.id,
        destType: destConn.type,
        destConfig: destConn.config as Record<string, unknown>,
        counts,
        // An insert was planned for a record absent from the snapshot, and only this run writes
        // the sync's snapshot: it is added without conflict handling (an insert-mode full resync
        // also plans inserts for records the snapshot has).
        insertsAreNew: !(state.run.fullResync && sync.mode === 'insert'),
        // A plan built before any batch was recorded holds each (row, operation) once and no
        // record of it exists yet: its checkpoints insert records without conflict handling.
        recordsFresh: planBase === 0,
        resumeAfterBatch: planBuiltNow ? undefined : planBase,
        clock: this.opts.clock,
        retryBaseMs: this.opts.retryBaseMs,
        retryMaxMs: this.opts.retryMaxMs,
        signal: stopped.signal,
        cancelRequested: () => cancelled.signal.aborted,
        log,
        redact,
        onRetry: (code) => this.hooks.retry?.(sync.id, code),
        batchDelivered: (n, result) => hook(log, () => this.hooks.batchDelivered?.(state.run, n, result)),
      });

      await state.enterPhase('finalizing');
      await refreshSnapshotStatistics(this.sql, counts, log);
      // The keys whose records this run may have written, before its staging tables go (a failure
      // only means the table is not kept).
      const kept = table && { ...table, keys: await keysWritten(this.sql, runId, maxKeys(table.index)).catch(() => undefined) };
      const rejected = counts.rejected.insert + counts.rejected.update + counts.rejected.delete;
      await state.finish(counts.invalid > 0 || rejected > 0 ? 'partially_succeeded' : 'succeeded', null, counts);
      log.info({ counts }, 'run finished');
      if (kept?.keys) this.fingerprintCache.keep(this.sql, { syncId: sync.id, stamp: kept.stamp, index: kept.index, keys: kept.keys }, log);
    } catch (e0) {
      // A wait cut short by a signal rejects with the signal's reason; AbortedError from inside
      // delivery means the same signal fired.
      // A source that noticed the cancel first answers with its own `cancelled`.
      const e1 = e0 instanceof AbortedError && stopped.signal.aborted ? stopped.signal.reason : e0 instanceof ConnectorError && e0.code === 'cancelled' && cancelled.signal.aborted ? new CancelledError() : e0;
      const e = redact && e1 instanceof Error ? redact.error(e1) : e1;
      if (e instanceof LeaseLostError) {
        // Thrown, not returned: the job is then released only if this process still holds it
        // (graphile-worker fails a job WHERE locked_by is this worker; it completes one by id alone).
        log.warn('run taken over by another execution; this one stops without writing');
        throw e;
      }
      if (isConnectionError(e)) {
        // The control database went away outside delivery (which waits for it): nothing can be
        // written now. The worker waits for it and executes the run again from its last marker.
        log.warn({ cause: errorSummary(e) }, 'control database unavailable: the run resumes from its last checkpoint once it is back');
        throw e;
      }
      if (e instanceof StagingLostError) {
        // Nothing was sent from rows that were lost; the run is executed again and reads the model anew.
        log.warn(e.message);
        throw e;
      }
      if (e instanceof AbortedError) {
        // Shutting down: what was acknowledged is checkpointed; the job is released and resumed.
        log.warn('run interrupted by shutdown; it will resume');
        throw e;
      }
      if (e instanceof CancelledError) {
        await state.finish('cancelled', { code: 'cancelled', message: 'Cancelled; rows acknowledged before the cancel stay delivered.', retryable: false }, counts);
        return;
      }
      const error = toRunError(e);
      if (!(e instanceof AppError)) log.error({ err: e }, 'run failed unexpectedly');
      else log.warn({ code: error.code }, `run failed: ${error.message}`);
      await state.finish('failed', error, counts);
    } finally {
      clearInterval(heartbeat);
      clearTimeout(deadline);
      ctx.signal.removeEventListener('abort', onShutdown);
      // Closing is bounded too: a connection stuck in a read is dropped, not awaited forever.
      if (source) await raceAbort(source.close(), AbortSignal.timeout(5000)).catch(() => {});
      if (dest) await raceAbort(dest.close(), AbortSignal.timeout(5000)).catch(() => {});
    }
  }
}

async function hook(log: Logger, fn: () => Promise<void> | undefined): Promise<void> {
  try {
    await fn();
  } catch (e) {
    // While the control database is away, one short line (not the failed statement and its parameters).
    if (isConnectionError(e)) log.warn({ cause: errorSummary(e) }, 'run hook failed: control database unavailable');
    else log.error({ err: e }, 'run hook failed');
  }
}

export function toRunError(e: unknown): { code: string; message: string; hint?: string; retryable: boolean } {
  // retryLater: a fatal stop that a later run can retry (e.g. HubSpot's daily limit until its reset).
  if (e instanceof ConnectorError) return { code: e.code, message: e.message, ...(e.hint ? { hint: e.hint } : {}), retryable: e.classification === 'retryable' || e.retryLater === true };
  if (e instanceof AppError) return { code: e.code, message: e.message, ...(e.hint ? { hint: e.hint } : {}), retryable: false };
  return { code: 'internal_error', message: 'The run failed because of an internal error; it has been logged.', retryable: true };
}

export type { RunStatus };
export { TERMINAL };
