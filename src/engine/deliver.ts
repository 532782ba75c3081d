import type { Logger } from 'pino';
import type { DestinationConnector, WriteCheckpoint } from '../connectors/types.ts';
import { errorSummary, type Sql } from '../db/client.ts';
import { GroupCommit } from '../lib/group-commit.ts';
import type { Redactor } from '../lib/redact.ts';
import type { SyncViewT } from '../domain/syncs.ts';
import { ConnectorError } from '../errors.ts';
import { AbortedError, deliverBatch, splitBatches, type BatchResult, type RowOutcome } from './batch.ts';
import { checkpoint, lastRecordedBatch, LeaseLostError, priorSends, registerInflight } from './checkpoint.ts';
import { whileDatabaseDown } from './db-wait.ts';
import { collectDone, readPending, type PlanPage } from './plan.ts';
import { limiterFor, type Clock } from './rate-limiter.ts';

// Delivering: pending plan operations in batches, `concurrency` in flight under the destination's
// rate limit; each acknowledged batch is checkpointed (group commit: batches acknowledged while a
// checkpoint is being written go into the next transaction, one at a time, so counts always match
// the records). Deletes come last in the plan and wait at a barrier until every write before them
// was acknowledged and checkpointed: a delete never runs before a write that could re-claim its
// record, and none runs at all when a write failed the run.
//
// The control database going away pauses delivery instead of failing the run: registering a
// batch, reading the plan and checkpointing are retried with backoff until it is back (or the
// run is stopped); batches acknowledged meanwhile wait in memory for their checkpoint, and the
// concurrency slots they hold keep new batches from being sent.

export class CancelledError extends Error {}

export interface DeliverInput {
  sql: Sql;
  run: { id: string; workspaceId: string; syncId: string };
  lease: number;
  snapshotVersion: number;
  sync: SyncViewT;
  dest: DestinationConnector;
  destConnId: string;
  destType: string;
  destConfig: Record<string, unknown>;
  counts: import('./status.ts').RunCounts;
  insertsAreNew: boolean;
  recordsFresh: boolean;
  /** A plan built by an earlier execution: the batch number it was built after (see planBaseBatch). */
  resumeAfterBatch: number | undefined;
  clock: Clock;
  retryBaseMs: number;
  retryMaxMs: number;
  /** Aborted on shutdown or at the run's deadline (in-flight writes finish and are checkpointed). */
  signal: AbortSignal;
  /** True once a cancel was requested (the heartbeat sets it); checked between batches. */
  cancelRequested: () => boolean;
  log: Logger;
  /** Applied to rejected rows' messages before they are recorded. */
  redact?: Redactor;
  onRetry?: (code: string) => void;
  /** After a batch is checkpointed (row debugger, metrics); runs beside delivery. */
  batchDelivered?: (batch: number, result: BatchResult) => Promise<void>;
}

export async function deliverPhase(d: DeliverInput): Promise<void> {
  const { sql, run, sync, dest } = d;
  const caps = dest.capabilities();
  // A destination with a bulk path (Salesforce Bulk API 2.0) gets one large batch at a time when
  // the run plans at least its threshold of rows of one operation; the job's id is kept on the
  // run row, so a worker killed mid-job resumes polling it instead of uploading again.
  const planned = d.counts.planned;
  const bulk = caps.bulk && Math.max(planned.insert + planned.update, planned.delete) >= caps.bulk.threshold ? caps.bulk : undefined;
  const batchSize = bulk ? bulk.maxBatchSize : Math.max(1, Math.min(sync.delivery.batchSize, caps.maxBatchSize));
  const concurrency = bulk ? 1 : sync.delivery.concurrency;
  const rate = sync.delivery.maxRequestsPerSecond ?? (d.destConfig.maxRequestsPerSecond as number | undefined) ?? caps.defaultMaxRequestsPerSecond ?? 0;
  const limiter = limiterFor(d.destConnId, rate, d.clock);
  const rowMode = d.destType === 'http' ? httpRowMode(d.destConfig, sync.object) : () => false;
  const deliveryCtx = {
    dest,
    object: sync.object,
    matchField: sync.matchKey.destinationField,
    limiter,
    clock: d.clock,
    maxRetries: sync.delivery.maxRetries,
    retryBaseMs: d.retryBaseMs,
    retryMaxMs: d.retryMaxMs,
    signal: d.signal,
    requestsFor: (n: number) => n,
    onRetry: d.onRetry,
    ...(bulk ? { bulkThreshold: bulk.threshold, checkpoint: runWriteState(sql, run.id, d.lease) } : {}),
  };

  let away = false;
  const patiently = <T>(what: string, fn: () => Promise<T>) =>
    whileDatabaseDown(fn, {
      signal: d.signal,
      onWait: (e, attempt) => {
        if (attempt === 1 && !away) d.log.warn({ cause: errorSummary(e) }, `control database unavailable (${what}): delivery paused until it is back`);
        away = true;
      },
      onBack: () => {
        if (away) d.log.info('control database back: delivery resumes');
        away = false;
      },
    });
  // Rows earlier executions sent without recording them: re-sent now, their records say so.
  const prior = await patiently('reading the run', () => priorSends(sql, run.id, d.lease));
  let batchNo = await patiently('reading the run', async () => (await sql<{ n: number }[]>`select coalesce(greatest(${lastRecordedBatch(sql, run.id)}, (select max(batch) from run_inflight where run_id = ${run.id})), 0)::int as n`)[0].n);
  const resumed = d.resumeAfterBatch !== undefined;
  if (resumed) {
    const n = await patiently('reading the run', () => collectDone(sql, run.id, d.resumeAfterBatch!));
    d.log.debug({ done: n }, 'resumed plan: operations already recorded are skipped');
  }
  // Group commit (lib/group-commit.ts): batches acknowledged while a checkpoint is being written go
  // into the next one, and batches that start while a registration is in flight register together.
  const checkpoints = new GroupCommit<{ batch: number; outcomes: RowOutcome[] }>((group) =>
    patiently('checkpointing', () => checkpoint({ sql, run, lease: d.lease, snapshotVersion: d.snapshotVersion, insertsAreNew: d.insertsAreNew, recordsFresh: d.recordsFresh, group, counts: d.counts })),
  );
  const registrations = new GroupCommit<{ batch: number; primaryKeys: string[] }>((group) => patiently('registering a batch', () => registerInflight(sql, run.id, d.lease, group)));
  const checkpointed = (batch: number, outcomes: RowOutcome[]) => {
    if (d.redact) for (const o of outcomes) if (o.message) o.message = d.redact.text(o.message);
    return checkpoints.add({ batch, outcomes });
  };
  const inflight = new Set<Promise<void>>();
  // batchDelivered hooks run beside delivery, not in its slots; a few may lag behind, then a slot
  // waits for them (bounded memory), and all end before the run does.
  const hooksPending = new Set<Promise<void>>();
  const afterCheckpoint = async (n: number, result: BatchResult) => {
    if (!d.batchDelivered) return;
    const h: Promise<void> = d.batchDelivered(n, result).finally(() => hooksPending.delete(h));
    hooksPending.add(h);
    while (hooksPending.size > concurrency * 2) await Promise.race(hooksPending);
  };
  let failure: unknown;
  let lastSeq = 0;
  let deletesOpen = false;
  let cancelled = false;
  const isCancelled = () => cancelled || d.cancelRequested();
  const stop = () => isCancelled() || failure !== undefined || d.signal.aborted;

  outer: for (;;) {
    if (stop()) break;
    let read: PlanPage;
    try {
      // The page comes with the run's cancel flag (one round trip).
      read = await patiently('reading the plan', () => readPending(sql, run.id, lastSeq, batchSize * concurrency, resumed));
    } catch (e) {
      // The plan was lost (StagingLostError): the batches in flight finish first.
      failure ??= e;
      break;
    }
    if (read.run === 'gone') throw new ConnectorError('sync_deleted', 'The sync was deleted during the run.', { classification: 'fatal' });
    if (read.run === 'cancelled') cancelled = true;
    const page = read.ops;
    if (stop()) break;
    if (!page.length) break;
    lastSeq = page[page.length - 1].seq;
    for (const batch of splitBatches(page, batchSize, sync.mode)) {
      if (batch.operation === 'delete' && !deletesOpen) {
        // The barrier: every write before the first delete is acknowledged and checkpointed.
        await Promise.all(inflight);
        await checkpoints.idle();
        deletesOpen = true;
      }
      while (inflight.size >= concurrency) await Promise.race(inflight);
      if (stop()) break outer;
      const n = ++batchNo;
      const perWrite = rowMode(batch.operation) ? (k: number) => k : () => 1;
      const p = (async () => {
        // Registered before it leaves: a later execution knows these rows may have been delivered.
        await registrations.add({ batch: n, primaryKeys: batch.ops.map((o) => o.pk) });
        const result = await deliverBatch({ ...deliveryCtx, requestsFor: perWrite }, batch.operation, batch.ops);
        if (prior.size) {
          for (const o of result.outcomes) {
            const k = prior.get(o.op.pk);
            if (k) o.priorSends = k;
          }
        }
        await checkpointed(n, result.outcomes);
        await afterCheckpoint(n, result);
      })()
        .catch((e) => {
          failure ??= e;
        })
        .finally(() => inflight.delete(p));
      inflight.add(p);
    }
  }
  await Promise.all(inflight);
  await checkpoints.idle();
  await Promise.all(hooksPending);
  d.log.debug({ batches: batchNo }, 'delivery done');
  if (failure) throw failure;
  if (d.signal.aborted) throw d.signal.reason instanceof Error ? d.signal.reason : new AbortedError();
  if (isCancelled()) throw new CancelledError();
}

/** Whether an HTTP destination object sends one request per row for an operation. */
function httpRowMode(config: Record<string, unknown>, object: string): (op: string) => boolean {
  const obj = (config.objects as { name: string; operations: Record<string, { mode?: string }> }[] | undefined)?.find((o) => o.name === object);
  return (op) => (obj?.operations?.[op]?.mode ?? 'row') === 'row';
}

/** Durable key → value storage on the run row (runs.write_state), fenced by the execution's lease. */
function runWriteState(sql: Sql, runId: string, lease: number): WriteCheckpoint {
  return {
    async get(key) {
      const [r] = await sql<{ v: string | null }[]>`select write_state ->> ${key} as v from runs where id = ${runId}`;
      return r?.v ?? undefined;
    },
    async set(key, value) {
      const r = await sql`update runs set write_state = write_state || jsonb_build_object(${key}::text, ${value}::text) where id = ${runId} and attempts = ${lease}`;
      if (!r.count) throw new LeaseLostError(runId);
    },
  };
}
