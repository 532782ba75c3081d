import { hash } from 'node:crypto';
import type { Logger } from 'pino';
import { compileMappings, type MappingSpec } from '../connectors/mapping.ts';
import type { DestinationConnector, DestinationField, Row, SourceConnector } from '../connectors/types.ts';
import { eq } from 'drizzle-orm';
import type { Database } from '../db/client.ts';
import { runs } from '../db/schema.ts';
import { publishRun, type RunRow } from '../domain/runs.ts';
import type { Services } from '../domain/services.ts';
import type { SyncViewT } from '../domain/syncs.ts';
import { AppError, ConnectorError } from '../errors.ts';
import { AbortedError, deliverBatch, splitBatches, type BatchResult, type RowOutcome } from './deliver.ts';
import { buildPlan, markDuplicates, planBaseBatch, planSize, readPending } from './plan.ts';
import { limiterFor, realClock, type Clock } from './rate-limiter.ts';
import { createStaging, dropRunTables, StagingWriter, STAGING_SCHEMA, stagingNames, tableExists } from './staging.ts';
import { emptyCounts, TERMINAL, type Phase, type PhaseTiming, type RunCounts, type RunError, type RunStatus } from './status.ts';

// Executes one run, resumably. Each phase leaves a marker on the run row (staged_at,
// planned_at); a run picked up again after a crash continues from the last marker and
// sends only plan rows still pending: acknowledged batches were checkpointed and are skipped.

export interface EngineOptions {
  clock?: Clock;
  retryBaseMs?: number;
  retryMaxMs?: number;
  heartbeatMs?: number;
  /** Rows per source batch while querying. */
  readBatchSize?: number;
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
  /** A phase finished, with its duration. */
  phaseFinished?: (run: RunRow, phase: Phase, ms: number) => void;
}

class CancelledError extends Error {}

const PAYLOAD_HASH = (s: string) => hash('sha1', s, 'base64url');
/** The snapshot's match_value: the JSON of the field (like `payload::jsonb -> field`, SQL null when absent). */
const matchJson = (v: unknown): string | null => (v === undefined ? null : JSON.stringify(v));

export class RunExecutor {
  private readonly database: Database;
  private readonly services: Services;
  private readonly opts: Required<EngineOptions>;
  private readonly hooks: RunHooks;

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
    };
  }

  private get sql() {
    return this.database.sql;
  }

  async execute(runId: string, ctx: RunContext): Promise<void> {
    const [loaded] = await this.database.db.select().from(runs).where(eq(runs.id, runId));
    if (!loaded || TERMINAL.has(loaded.status as RunStatus)) return; // deleted, or already finished: nothing to do
    let run = loaded;
    const log = ctx.logger.child({ runId, syncId: run.syncId });
    if (run.cancelRequestedAt) {
      await this.finish(run, 'cancelled', { code: 'cancelled', message: 'Cancelled before it started.', retryable: false });
      return;
    }
    const firstStart = !run.startedAt;
    run = await this.update(run, {
      status: 'running',
      startedAt: run.startedAt ?? new Date(),
      workerId: ctx.workerId,
      heartbeatAt: new Date(),
      attempts: run.attempts + 1,
    });
    if (firstStart) await this.hook(log, () => this.hooks.runStarted?.(run));

    const counts: RunCounts = { ...emptyCounts(), ...(run.counts as RunCounts) };
    const state = { cancelRequested: false };
    const heartbeat = setInterval(() => {
      this.sql`update runs set heartbeat_at = now() where id = ${runId} returning cancel_requested_at`
        .then((r) => {
          if (r[0]?.cancel_requested_at) state.cancelRequested = true;
        })
        .catch(() => {});
    }, this.opts.heartbeatMs);
    heartbeat.unref();

    let source: SourceConnector | undefined;
    let dest: DestinationConnector | undefined;
    try {
      const actor = { workspaceId: run.workspaceId, keyId: null, scopes: ['admin' as const], owner: false };
      const sync = await this.services.syncs.get(actor, run.syncId);
      const model = await this.services.models.row(this.database.db, run.workspaceId, sync.modelId);
      const srcConn = await this.services.connections.row(this.database.db, run.workspaceId, model.connectionId);
      const destConn = await this.services.connections.row(this.database.db, run.workspaceId, sync.destinationId);
      dest = this.services.connections.openDestination(destConn);

      let planBuiltNow = false;
      let planBase = 0;
      const plannedOk = run.plannedAt && (await tableExists(this.sql, stagingNames(runId).plan)) && (await planSize(this.sql, runId)) === run.plannedTotal;
      if (!plannedOk) {
        const stagedOk = run.stagedAt && (await tableExists(this.sql, stagingNames(runId).stg));
        if (!stagedOk) {
          run = await this.enterPhase(run, 'querying');
          source = this.services.connections.openSource(srcConn);
          const fields = await dest.fields(sync.object);
          await this.query(run, sync, model, source, fields, counts, ctx.signal);
          await source.close();
          source = undefined;
          run = await this.update(run, { stagedAt: new Date(), counts });
        }
        run = await this.enterPhase(run, 'diffing');
        const dups = await markDuplicates(this.sql, runId);
        if (dups.length) {
          counts.invalid += dups.length;
          await this.recordInvalid(run, dups.map((pk) => ({ pk, code: 'duplicate_primary_key', message: `Primary key "${pk}" appears more than once in the model's result.` })));
        }
        const [{ base }] = await this.sql<{ base: number }[]>`select coalesce(max(batch), 0)::int as base from run_records where run_id = ${runId}`;
        const { planned, total } = await buildPlan(this.sql, runId, {
          syncId: sync.id,
          mode: sync.mode,
          fullResync: run.fullResync,
          matchField: sync.matchKey.destinationField,
          baseBatch: base,
        });
        planBuiltNow = true;
        planBase = base;
        // A plan rebuilt after its table was lost keeps the counts of what was already delivered.
        counts.planned = {
          insert: planned.insert + counts.succeeded.insert,
          update: planned.update + counts.succeeded.update,
          delete: planned.delete + counts.succeeded.delete,
        };
        run = await this.update(run, { plannedAt: new Date(), plannedTotal: total, counts });
      }

      run = await this.enterPhase(run, 'delivering');
      if (!planBuiltNow) planBase = await planBaseBatch(this.sql, runId);
      const resumeAfterBatch = planBuiltNow ? undefined : planBase;
      // A plan built before any batch was recorded holds each (row, operation) once and no record
      // of it exists yet: its checkpoints insert records without conflict handling.
      const recordsFresh = planBase === 0;
      await this.deliver(run, sync, destConn.id, destConn.type, destConn.config as Record<string, unknown>, dest, counts, state, ctx, log, resumeAfterBatch, recordsFresh);

      run = await this.enterPhase(run, 'finalizing');
      const rejected = counts.rejected.insert + counts.rejected.update + counts.rejected.delete;
      await this.finish(run, counts.invalid > 0 || rejected > 0 ? 'partially_succeeded' : 'succeeded', null, counts);
      log.info({ counts }, 'run finished');
    } catch (e) {
      if (e instanceof AbortedError || (ctx.signal.aborted && !(e instanceof CancelledError))) {
        // Shutting down: what was acknowledged is checkpointed; the job is released and resumed.
        log.warn('run interrupted by shutdown; it will resume');
        throw e instanceof AbortedError ? e : new AbortedError();
      }
      if (e instanceof CancelledError) {
        await this.finish(run, 'cancelled', { code: 'cancelled', message: 'Cancelled; rows acknowledged before the cancel stay delivered.', retryable: false }, counts);
        return;
      }
      const error = toRunError(e);
      if (!(e instanceof AppError)) log.error({ err: e }, 'run failed unexpectedly');
      else log.warn({ code: error.code }, `run failed: ${error.message}`);
      await this.finish(run, 'failed', error, counts);
    } finally {
      clearInterval(heartbeat);
      await source?.close().catch(() => {});
      await dest?.close().catch(() => {});
    }
  }

  /** Querying: stream the model, map each row, COPY (pk, hash, payload) into staging. */
  private async query(
    run: RunRow,
    sync: SyncViewT,
    model: { sql: string; primaryKey: string },
    source: SourceConnector,
    fields: DestinationField[],
    counts: RunCounts,
    signal: AbortSignal,
  ): Promise<void> {
    const mappings: MappingSpec[] = (await this.services.mappings.allForSync(this.database.db, run.workspaceId, run.syncId)).map((m) => ({
      destinationField: m.destinationField,
      source: m.source,
    }));
    if (!mappings.some((m) => m.destinationField === sync.matchKey.destinationField)) {
      mappings.push({ destinationField: sync.matchKey.destinationField, source: { column: sync.matchKey.sourceColumn } });
    }
    const columns = await source.columns(model.sql);
    const colNames = columns.map((c) => c.name);
    if (!colNames.includes(model.primaryKey)) {
      throw new ConnectorError('primary_key_not_found', `The model's query returns no column "${model.primaryKey}".`, { classification: 'fatal', hint: "Fix the model's primaryKey or its SQL." });
    }
    const map = compileMappings(mappings, fields, { columns: colNames });
    const matchField = sync.matchKey.destinationField;

    counts.queried = 0;
    counts.invalid = 0;
    await createStaging(this.sql, run.id);
    const writer = await StagingWriter.open(this.sql, run.id);
    const invalid: { pk: string; code: string; message: string }[] = [];
    try {
      for await (const batch of source.stream(model.sql, { batchSize: this.opts.readBatchSize, signal })) {
        for (const row of batch) {
          counts.queried++;
          const pkValue = (row as Row)[model.primaryKey];
          if (pkValue === null || pkValue === undefined || pkValue === '') {
            counts.invalid++;
            invalid.push({ pk: `(row ${counts.queried})`, code: 'missing_primary_key', message: `Row ${counts.queried} has no value in primary-key column "${model.primaryKey}".` });
            continue;
          }
          const pk = typeof pkValue === 'object' ? JSON.stringify(pkValue) : String(pkValue);
          const mapped = map(row);
          if (!mapped.ok) {
            counts.invalid++;
            invalid.push({ pk, code: mapped.code, message: mapped.message });
            const w = writer.write(pk, null, null, 'i');
            if (w) await w;
            continue;
          }
          const payload = JSON.stringify(mapped.payload);
          const w = writer.write(pk, PAYLOAD_HASH(payload), payload, 'v', matchJson(mapped.payload[matchField]));
          if (w) await w;
        }
        if (invalid.length >= 1000) await this.recordInvalid(run, invalid.splice(0));
        if (signal.aborted) throw new AbortedError();
      }
      await writer.end();
    } catch (e) {
      writer.destroy();
      throw e;
    }
    if (invalid.length) await this.recordInvalid(run, invalid);
  }

  private async deliver(
    run: RunRow,
    sync: SyncViewT,
    destConnId: string,
    destType: string,
    destConfig: Record<string, unknown>,
    dest: DestinationConnector,
    counts: RunCounts,
    state: { cancelRequested: boolean },
    ctx: RunContext,
    log: Logger,
    resumeAfterBatch: number | undefined,
    recordsFresh: boolean,
  ): Promise<void> {
    const caps = dest.capabilities();
    const batchSize = Math.max(1, Math.min(sync.delivery.batchSize, caps.maxBatchSize));
    const concurrency = sync.delivery.concurrency;
    const rate =
      sync.delivery.maxRequestsPerSecond ?? (destConfig.maxRequestsPerSecond as number | undefined) ?? caps.defaultMaxRequestsPerSecond ?? 0;
    const limiter = limiterFor(destConnId, rate, this.opts.clock);
    const rowMode = destType === 'http' ? httpRowMode(destConfig, sync.object) : () => false;
    const deliveryCtx = {
      dest,
      object: sync.object,
      matchField: sync.matchKey.destinationField,
      limiter,
      clock: this.opts.clock,
      maxRetries: sync.delivery.maxRetries,
      retryBaseMs: this.opts.retryBaseMs,
      retryMaxMs: this.opts.retryMaxMs,
      signal: ctx.signal,
      requestsFor: (n: number) => n,
      onRetry: (code: string) => this.hooks.retry?.(sync.id, code),
    };

    let batchNo = (await this.sql<{ n: number }[]>`select count(distinct batch)::int as n from run_records where run_id = ${run.id} and batch is not null`)[0].n;
    // Group commit: batches acknowledged while a checkpoint is being written are checkpointed
    // together in the next transaction (one at a time, so counts always match the records).
    const queued: { batch: number; outcomes: RowOutcome[]; resolve: () => void; reject: (e: unknown) => void }[] = [];
    let draining: Promise<void> | undefined;
    const drain = async () => {
      while (queued.length) {
        const group = queued.splice(0);
        try {
          await this.checkpoint(run, sync, group, counts, recordsFresh);
          for (const g of group) g.resolve();
        } catch (e) {
          for (const g of group) g.reject(e);
        }
      }
      draining = undefined;
    };
    const checkpointed = (batch: number, outcomes: RowOutcome[]) =>
      new Promise<void>((resolve, reject) => {
        queued.push({ batch, outcomes, resolve, reject });
        draining ??= drain();
      });
    const inflight = new Set<Promise<void>>();
    // batchDelivered hooks (row debugger, metrics) run beside delivery, not in its slots; a few
    // may lag behind, then a slot waits for them (bounded memory), and all end before the run does.
    const hooksPending = new Set<Promise<void>>();
    const afterCheckpoint = async (n: number, result: BatchResult) => {
      const h: Promise<void> = this.hook(log, () => this.hooks.batchDelivered?.(run, n, result)).finally(() => hooksPending.delete(h));
      hooksPending.add(h);
      while (hooksPending.size > concurrency * 2) await Promise.race(hooksPending);
    };
    let failure: unknown;
    let lastSeq = 0;

    outer: for (;;) {
      const [flag] = await this.sql`select cancel_requested_at from runs where id = ${run.id}`;
      if (!flag) throw new ConnectorError('sync_deleted', 'The sync was deleted during the run.', { classification: 'fatal' });
      if (flag.cancel_requested_at) state.cancelRequested = true;
      if (state.cancelRequested || failure || ctx.signal.aborted) break;
      const page = await readPending(this.sql, run.id, lastSeq, batchSize * concurrency, resumeAfterBatch);
      if (!page.length) break;
      lastSeq = page[page.length - 1].seq;
      for (const batch of splitBatches(page, batchSize, sync.mode)) {
        while (inflight.size >= concurrency) await Promise.race(inflight);
        if (state.cancelRequested || failure || ctx.signal.aborted) break outer;
        const n = ++batchNo;
        const perWrite = rowMode(batch.operation) ? (k: number) => k : () => 1;
        const p = deliverBatch({ ...deliveryCtx, requestsFor: perWrite }, batch.operation, batch.ops)
          .then((result) => checkpointed(n, result.outcomes).then(() => afterCheckpoint(n, result)))
          .catch((e) => {
            failure ??= e;
          })
          .finally(() => inflight.delete(p));
        inflight.add(p);
      }
    }
    await Promise.all(inflight);
    await draining;
    await Promise.all(hooksPending);
    log.debug({ batches: batchNo }, 'delivery done');
    if (failure) throw failure;
    if (ctx.signal.aborted) throw new AbortedError();
    if (state.cancelRequested) throw new CancelledError();
  }

  /**
   * One transaction for one or more acknowledged batches: snapshot, run records (which also mark
   * the plan operations done), counts. Never called twice at once for a run. Succeeded rows are
   * named by plan seq only and copied server-side from the plan; rejected rows carry their reasons.
   *
   * The commit does not wait for the WAL flush (synchronous_commit off, this transaction only):
   * a checkpoint lost to a crash of PostgreSQL itself loses the unlogged plan with it, and the run
   * then re-plans from the snapshot and sends those rows again — at-least-once, never a row
   * reported that was not delivered. A killed worker loses nothing: its commits are in the server.
   */
  private async checkpoint(
    run: RunRow,
    sync: SyncViewT,
    group: { batch: number; outcomes: RowOutcome[] }[],
    counts: RunCounts,
    recordsFresh: boolean,
  ): Promise<void> {
    const { plan } = stagingNames(run.id);
    const p = this.sql`${this.sql(STAGING_SCHEMA)}.${this.sql(plan)}`;
    // An insert was planned for a row absent from the snapshot, and only this run writes the
    // sync's snapshot: it is added without conflict handling (an insert-mode full resync also
    // plans inserts for rows the snapshot has).
    const insertsAreNew = !(run.fullResync && sync.mode === 'insert');
    const okInserts: number[] = [];
    const okUpdates: number[] = [];
    const okDeletes: string[] = [];
    const ok = { seqs: [] as number[], attempts: [] as number[], batches: [] as number[] };
    const bad = { pks: [] as string[], ops: [] as string[], codes: [] as (string | null)[], messages: [] as (string | null)[], attempts: [] as number[], batches: [] as number[] };
    for (const { batch, outcomes } of group) {
      for (const o of outcomes) {
        if (o.status === 'succeeded') {
          counts.succeeded[o.op.op]++;
          if (o.op.op === 'delete') okDeletes.push(o.op.pk);
          else if (o.op.op === 'insert' && insertsAreNew) okInserts.push(o.op.seq);
          else okUpdates.push(o.op.seq);
          ok.seqs.push(o.op.seq);
          ok.attempts.push(o.attempts);
          ok.batches.push(batch);
        } else {
          counts.rejected[o.op.op]++;
          bad.pks.push(o.op.pk);
          bad.ops.push(o.op.op);
          bad.codes.push(o.code ?? null);
          bad.messages.push(o.message ? o.message.slice(0, 2000) : null);
          bad.attempts.push(o.attempts);
          bad.batches.push(batch);
        }
      }
    }
    const onConflict = recordsFresh
      ? this.sql``
      : this.sql`on conflict (run_id, primary_key, operation) do update
          set status = excluded.status, error_code = excluded.error_code, error_message = excluded.error_message,
              attempts = run_records.attempts + excluded.attempts, batch = excluded.batch`;
    await this.sql.begin(async (tx) => {
      await tx`set local synchronous_commit = off`;
      if (okInserts.length) {
        await tx`
          insert into sync_snapshots (sync_id, primary_key, hash, match_value, updated_at)
          select ${sync.id}, pk, hash, match::jsonb, now() from ${p} where seq = any(${okInserts}::bigint[])`;
      }
      if (okUpdates.length) {
        await tx`
          insert into sync_snapshots (sync_id, primary_key, hash, match_value, updated_at)
          select ${sync.id}, pk, hash, match::jsonb, now() from ${p} where seq = any(${okUpdates}::bigint[])
          on conflict (sync_id, primary_key) do update set hash = excluded.hash, match_value = excluded.match_value, updated_at = now()`;
      }
      if (okDeletes.length) {
        await tx`delete from sync_snapshots where sync_id = ${sync.id} and primary_key = any(${okDeletes}::text[])`;
      }
      if (ok.seqs.length) {
        await tx`
          insert into run_records (run_id, workspace_id, sync_id, primary_key, operation, status, attempts, batch)
          select ${run.id}, ${run.workspaceId}, ${run.syncId}, pl.pk, pl.op, 'succeeded', u.attempts, u.batch
          from unnest(${ok.seqs}::bigint[], ${ok.attempts}::int[], ${ok.batches}::int[]) as u(seq, attempts, batch)
          join ${p} pl on pl.seq = u.seq
          ${onConflict}`;
      }
      if (bad.pks.length) {
        await tx`
          insert into run_records (run_id, workspace_id, sync_id, primary_key, operation, status, error_code, error_message, attempts, batch)
          select ${run.id}, ${run.workspaceId}, ${run.syncId}, r.pk, r.op, 'rejected', r.code, r.message, r.attempts, r.batch
          from unnest(${bad.pks}::text[], ${bad.ops}::text[], ${bad.codes as string[]}::text[], ${bad.messages as string[]}::text[],
                      ${bad.attempts}::int[], ${bad.batches}::int[]) as r(pk, op, code, message, attempts, batch)
          ${onConflict}`;
      }
      // drizzle installs pass-through json serializers on this client: send JSON as text.
      await tx`update runs set counts = ${JSON.stringify(counts)}::jsonb, heartbeat_at = now() where id = ${run.id}`;
    });
  }

  private async recordInvalid(run: RunRow, rows: { pk: string; code: string; message: string }[]): Promise<void> {
    for (let i = 0; i < rows.length; i += 5000) {
      const chunk = rows.slice(i, i + 5000);
      await this.sql`
        insert into run_records (run_id, workspace_id, sync_id, primary_key, operation, status, error_code, error_message, attempts)
        select ${run.id}, ${run.workspaceId}, ${run.syncId}, r.pk, 'none', 'invalid', r.code, r.message, 0
        from unnest(${chunk.map((r) => r.pk)}::text[], ${chunk.map((r) => r.code)}::text[], ${chunk.map((r) => r.message.slice(0, 2000))}::text[]) as r(pk, code, message)
        on conflict do nothing`;
    }
  }

  private async hook(log: Logger, fn: () => Promise<void> | undefined): Promise<void> {
    try {
      await fn();
    } catch (e) {
      log.error({ err: e }, 'run hook failed');
    }
  }

  private async enterPhase(run: RunRow, phase: Phase): Promise<RunRow> {
    const now = new Date().toISOString();
    for (const p of run.phases as PhaseTiming[]) {
      if (p.finishedAt === null && p.name !== phase) this.hooks.phaseFinished?.(run, p.name, Date.parse(now) - Date.parse(p.startedAt));
    }
    const phases = (run.phases as PhaseTiming[]).map((p) => (p.finishedAt === null && p.name !== phase ? { ...p, finishedAt: now } : p));
    if (!phases.some((p) => p.name === phase)) phases.push({ name: phase, startedAt: now, finishedAt: null });
    return this.update(run, { phase, phases });
  }

  private async finish(run: RunRow, status: RunStatus, error: RunError | null, counts?: RunCounts): Promise<void> {
    const now = new Date().toISOString();
    const phases = (run.phases as PhaseTiming[]).map((p) => (p.finishedAt === null ? { ...p, finishedAt: now } : p));
    const finished = await this.update(run, { status, error, finishedAt: new Date(now), phases, ...(counts ? { counts } : {}) });
    await dropRunTables(this.sql, run.id).catch(() => {});
    try {
      await this.hooks.runFinished?.(finished);
    } catch {
      // a failing hook never changes the run's outcome (the hook logs its own errors)
    }
  }

  /** Updates the run row and publishes the change (GraphQL subscriptions, other instances). */
  private async update(run: RunRow, set: Partial<typeof runs.$inferInsert>): Promise<RunRow> {
    const [row] = await this.database.db.update(runs).set(set).where(eq(runs.id, run.id)).returning();
    if (!row) throw new ConnectorError('sync_deleted', 'The sync was deleted during the run.', { classification: 'fatal' });
    await publishRun(this.database.db, row);
    return row;
  }
}

/** Whether an HTTP destination object sends one request per row for an operation. */
function httpRowMode(config: Record<string, unknown>, object: string): (op: string) => boolean {
  const obj = (config.objects as { name: string; operations: Record<string, { mode?: string }> }[] | undefined)?.find((o) => o.name === object);
  return (op) => (obj?.operations?.[op]?.mode ?? 'row') === 'row';
}

export function toRunError(e: unknown): RunError {
  if (e instanceof ConnectorError) return { code: e.code, message: e.message, ...(e.hint ? { hint: e.hint } : {}), retryable: e.classification === 'retryable' };
  if (e instanceof AppError) return { code: e.code, message: e.message, ...(e.hint ? { hint: e.hint } : {}), retryable: false };
  return { code: 'internal_error', message: 'The run failed because of an internal error; it has been logged.', retryable: true };
}
