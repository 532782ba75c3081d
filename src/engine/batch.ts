import type { DestinationConnector, WireExchange, WriteCheckpoint, WriteOperation, WriteResult, WriteRow } from '../connectors/types.ts';
import { BatchRejectedError, ConnectorError } from '../errors.ts';
import { parsePayload } from '../lib/json.ts';
import type { PlannedOp } from './plan.ts';
import { backoffMs, type Clock, type RateLimiter } from './rate-limiter.ts';

// Sending one batch: rate limit, retries with backoff (honouring Retry-After), re-sending only
// the rows a destination marked retryable, and bisection of a batch refused as a whole until
// the rows at fault are isolated. Every row ends succeeded or rejected; whole-request failures
// that outlast the retries, and fatal ones, are thrown to fail the run.

export interface RowOutcome {
  op: PlannedOp;
  status: 'succeeded' | 'rejected';
  code?: string;
  message?: string;
  attempts: number;
  /** The destination's id for the record (succeeded rows, when it returned one). */
  externalId?: string;
  /**
   * Sends of this row by earlier executions of the run whose outcome was never recorded (they
   * crashed, lost the run to another worker, or PostgreSQL lost the plan): the row may have
   * reached the destination that many more times. Its record counts them in `attempts` and is
   * marked `redelivered`.
   */
  priorSends?: number;
}

export interface DeliveryContext {
  dest: DestinationConnector;
  object: string;
  matchField: string;
  limiter: RateLimiter;
  clock: Clock;
  maxRetries: number;
  retryBaseMs: number;
  retryMaxMs: number;
  signal: AbortSignal;
  /** How many HTTP requests a write of n rows costs (row-mode HTTP: n; batch: 1). */
  requestsFor(n: number): number;
  /** Batches of at least this many rows take the destination's bulk path (DestinationCapabilities.bulk). */
  bulkThreshold?: number;
  /** Durable state for writes that outlive a process (a bulk job), kept on the run row. */
  checkpoint?: WriteCheckpoint;
  onRetry?(code: string): void;
}

export function wireOperation(mode: string, op: PlannedOp['op']): WriteOperation {
  if (op === 'delete') return 'delete';
  if (mode === 'insert') return 'insert';
  if (mode === 'update') return 'update';
  return 'upsert';
}

export class AbortedError extends Error {
  constructor() {
    super('delivery aborted (shutting down)');
  }
}

export interface BatchResult {
  outcomes: RowOutcome[];
  /** Each request of the batch with the plan rows it carried (the row debugger keeps them). */
  exchanges: { exchange: WireExchange; seqs: number[] }[];
}

export async function deliverBatch(ctx: DeliveryContext, operation: WriteOperation, ops: PlannedOp[]): Promise<BatchResult> {
  const out = new Map<number, RowOutcome>();
  const exchanges: BatchResult['exchanges'] = [];
  await send(ctx, operation, ops, out, exchanges);
  return { outcomes: ops.map((o) => out.get(o.seq)!), exchanges };
}

async function send(
  ctx: DeliveryContext,
  operation: WriteOperation,
  batch: PlannedOp[],
  out: Map<number, RowOutcome>,
  exchanges: BatchResult['exchanges'],
): Promise<void> {
  let pending = batch;
  let attempt = 0;
  while (pending.length) {
    if (ctx.signal.aborted) throw new AbortedError();
    attempt++;
    await ctx.limiter.acquire(ctx.requestsFor(pending.length), ctx.signal);
    let res: WriteResult;
    try {
      res = await ctx.dest.write({
        object: ctx.object,
        operation,
        matchField: ctx.matchField,
        ...(ctx.bulkThreshold !== undefined ? { bulkThreshold: ctx.bulkThreshold, checkpoint: ctx.checkpoint } : {}),
        // No abort signal here: on shutdown an in-flight write finishes and is checkpointed.
        rows: pending.map(writeRow),
      });
    } catch (e) {
      // Failed requests are kept for the row debugger with the rows they carried.
      if (e instanceof ConnectorError) {
        for (const ex of e.exchanges ?? []) {
          exchanges.push({ exchange: ex, seqs: (ex.rowIndexes ?? pending.map((_, i) => i)).map((i) => pending[i].seq) });
        }
      }
      if (e instanceof BatchRejectedError) {
        if (pending.length === 1) {
          out.set(pending[0].seq, { op: pending[0], status: 'rejected', code: e.code, message: e.message, attempts: attempt });
          return;
        }
        // One bad row spoils the request: split until the bad rows stand alone.
        const mid = Math.ceil(pending.length / 2);
        await send(ctx, operation, pending.slice(0, mid), out, exchanges);
        await send(ctx, operation, pending.slice(mid), out, exchanges);
        return;
      }
      if (e instanceof ConnectorError && e.classification === 'retryable') {
        if (e.code === 'rate_limited') ctx.limiter.onThrottled();
        ctx.onRetry?.(e.code);
        if (attempt > ctx.maxRetries) {
          throw new ConnectorError('destination_unavailable', `The destination kept failing after ${ctx.maxRetries} retries: ${e.message}`, {
            classification: 'retryable',
            hint: 'Check the destination is up and its rate limits; the next run retries every row that was not delivered.',
            cause: e,
          });
        }
        await ctx.clock.sleep(backoffMs(attempt, { baseMs: ctx.retryBaseMs, maxMs: ctx.retryMaxMs, retryAfterMs: e.retryAfterMs }), ctx.signal);
        if (ctx.signal.aborted) throw new AbortedError();
        continue;
      }
      if (e instanceof ConnectorError && e.classification === 'row') {
        for (const o of pending) out.set(o.seq, { op: o, status: 'rejected', code: e.code, message: e.message, attempts: attempt });
        return;
      }
      throw e;
    }
    if (res.results.length !== pending.length) {
      throw new ConnectorError('connector_contract', `The destination connector returned ${res.results.length} results for ${pending.length} rows.`, { classification: 'fatal' });
    }
    ctx.limiter.onSuccess();
    for (const ex of res.exchanges ?? []) {
      exchanges.push({ exchange: ex, seqs: (ex.rowIndexes ?? pending.map((_, i) => i)).map((i) => pending[i].seq) });
    }
    const retry: PlannedOp[] = [];
    res.results.forEach((r, i) => {
      const o = pending[i];
      if (r.status === 'succeeded') out.set(o.seq, { op: o, status: 'succeeded', attempts: attempt, ...(r.externalId ? { externalId: String(r.externalId) } : {}) });
      else if (r.retryable && attempt <= ctx.maxRetries) retry.push(o);
      else out.set(o.seq, { op: o, status: 'rejected', code: r.code, message: r.message, attempts: attempt });
    });
    if (retry.length) {
      if (res.retryAfterMs !== undefined) ctx.limiter.onThrottled();
      ctx.onRetry?.('row_retry');
      await ctx.clock.sleep(backoffMs(attempt, { baseMs: ctx.retryBaseMs, maxMs: ctx.retryMaxMs, retryAfterMs: res.retryAfterMs }), ctx.signal);
    }
    pending = retry;
  }
}

/** A plan operation as the connector sees it: the payload parsed on first read (see WriteRow.payloadJson). */
function writeRow(o: PlannedOp): WriteRow {
  let parsed: Record<string, unknown> | undefined;
  return {
    primaryKey: o.pk,
    get payload() {
      return (parsed ??= parsePayload(o.payload));
    },
    payloadJson: o.payload,
    ...(o.recordId ? { recordId: o.recordId } : {}),
  };
}

/** Splits a page of plan rows into batches of one wire operation each, at most `size` rows. */
export function splitBatches(page: PlannedOp[], size: number, mode: string): { operation: WriteOperation; ops: PlannedOp[] }[] {
  const batches: { operation: WriteOperation; ops: PlannedOp[] }[] = [];
  let cur: { operation: WriteOperation; ops: PlannedOp[] } | undefined;
  for (const o of page) {
    const operation = wireOperation(mode, o.op);
    if (!cur || cur.operation !== operation || cur.ops.length >= size) {
      cur = { operation, ops: [] };
      batches.push(cur);
    }
    cur.ops.push(o);
  }
  return batches;
}
