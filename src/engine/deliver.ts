import type { Logger } from 'pino';
import type { DestinationConnector, WriteCheckpoint } from '../connectors/types.ts';
import { errorSummary, type Sql } from '../db/client.ts';
import { GroupCommit } from '../lib/group-commit.ts';
import type { Redactor } from '../lib/redact.ts';
import type { SyncViewT } from '../domain/syncs.ts';
import { ConnectorError } from '../errors.ts';
import { AbortedError, deliverBatch, type BatchResult, type RowOutcome } from './batch.ts';
import { BatchFeed, type FeedBatch } from './batch-feed.ts';
import { checkpoint, type InflightBatch, lastRecordedBatch, LeaseLostError, priorSends, registerInflight, withdrawInflight } from './checkpoint.ts';
import { whileDatabaseDown } from './db-wait.ts';
import { collectDone, readPending } from './plan.ts';
import { limiterFor, type Clock } from './rate-limiter.ts';

// Delivering: pending plan operations in batches, `concurrency` slots each sending one batch at a
// time under the destination's rate limit, fed by the plan read a page ahead (batch-feed.ts); each
// acknowledged batch is checkpointed (group commit: batches acknowledged while a checkpoint is
// being written go into the next transaction, one at a time, so counts always match the records). Deletes come last in the plan and wait at a barrier until every write before them
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
  // into the next one, and batches that start while a registration is in flight register together
  // (most batches need none: the checkpoint that frees their slot registers them).
  const checkpoints = new GroupCommit<{ batch: number; outcomes: RowOutcome[]; next?: InflightBatch }>((group) =>
    patiently('checkpointing', () =>
      checkpoint({
        sql,
        run,
        lease: d.lease,
        snapshotVersion: d.snapshotVersion,
        insertsAreNew: d.insertsAreNew,
        recordsFresh: d.recordsFresh,
        group,
        register: group.flatMap((g) => (g.next ? [g.next] : [])),
        counts: d.counts,
      }),
    ),
  );
  const registrations = new GroupCommit<InflightBatch>((group) => patiently('registering a batch', () => registerInflight(sql, run.id, d.lease, group)));
  // batchDelivered hooks run beside delivery, not in its slots; a few may lag behind, then a slot
  // waits for them (bounded memory), and all end before the run does.
  const hooksPending = new Set<Promise<void>>();
  const afterCheckpoint = (n: number, result: BatchResult) => {
    if (!d.batchDelivered) return;
    const h: Promise<void> = d.batchDelivered(n, result).finally(() => hooksPending.delete(h));
    hooksPending.add(h);
  };
  let failure: unknown;
  let deletesOpen = false;
  let cancelled = false;
  const isCancelled = () => cancelled || d.cancelRequested();
  const stop = () => isCancelled() || failure !== undefined || d.signal.aborted;
  const feed = new BatchFeed((afterSeq, limit) => patiently('reading the plan', () => readPending(sql, run.id, afterSeq, limit, resumed)), {
    pageSize: batchSize * concurrency,
    batchSize,
    mode: sync.mode,
    // Every page comes with the run's cancel flag (one round trip).
    onPage: (read) => {
      if (read.run === 'gone') throw new ConnectorError('sync_deleted', 'The sync was deleted during the run.', { classification: 'fatal' });
      if (read.run === 'cancelled') cancelled = true;
    },
    readAhead: () => !stop(),
  });
  type Claimed = { n: number; batch: FeedBatch };
  const claim = (batch: FeedBatch): Claimed => ({ n: ++batchNo, batch });
  const keysOf = (c: Claimed): InflightBatch => ({ batch: c.n, primaryKeys: c.batch.ops.map((o) => o.pk) });

  // A slot sends one batch at a time: registered before it leaves (a later execution then knows
  // its rows may have been delivered), acknowledged, checkpointed. The batch that takes the slot
  // next is registered by that same checkpoint statement when it is already read, so it leaves
  // as soon as the checkpoint commits, without a round trip of its own. Registered batches are
  // thus never more than the slots, and each is registered only just before it is sent: a slot
  // that finds the run stopping after its checkpoint withdraws its successor's registration.
  const slot = async (): Promise<void> => {
    let claimed: Claimed | undefined;
    try {
      for (;;) {
        let c = claimed;
        claimed = undefined;
        if (!c) {
          if (stop()) return;
          const batch = await feed.take(deletesOpen);
          if (!batch || stop()) return;
          c = claim(batch);
          await registrations.add(keysOf(c));
        }
        const { operation, ops } = c.batch;
        const perWrite = rowMode(operation) ? (k: number) => k : () => 1;
        const result = await deliverBatch({ ...deliveryCtx, requestsFor: perWrite }, operation, ops);
        if (prior.size) {
          for (const o of result.outcomes) {
            const k = prior.get(o.op.pk);
            if (k) o.priorSends = k;
          }
        }
        if (d.redact) for (const o of result.outcomes) if (o.message) o.message = d.redact.text(o.message);
        // A successor is registered only when it can leave right after the checkpoint: not when
        // the run is stopping, nor when hooks lag behind (the slot then waits for them first).
        const lagging = hooksPending.size >= concurrency * 2;
        const nextBatch = stop() || lagging ? undefined : feed.takeReady(deletesOpen);
        const next = nextBatch && claim(nextBatch);
        await checkpoints.add({ batch: c.n, outcomes: result.outcomes, ...(next ? { next: keysOf(next) } : {}) });
        afterCheckpoint(c.n, result);
        if (!next) while (hooksPending.size > concurrency * 2) await Promise.race(hooksPending);
        if (next && stop()) {
          await withdrawInflight(sql, run.id, d.lease, next.n).catch((e: unknown) => d.log.warn({ cause: errorSummary(e), batch: next.n }, 'a registered batch that was not sent stays registered (a later execution marks its rows redelivered)'));
          return;
        }
        claimed = next;
      }
    } catch (e) {
      failure ??= e;
    }
  };
  const slots = () => Promise.all(Array.from({ length: concurrency }, slot));
  await slots();
  // Deletes come last, behind a barrier: every write before the first delete is acknowledged
  // and checkpointed (every slot ended after its last checkpoint). Without deletes, the slots
  // find the plan exhausted at once.
  if (!stop()) {
    await checkpoints.idle();
    deletesOpen = true;
    await slots();
  }
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
