import { Type, type Static } from '@sinclair/typebox';
import { and, desc, eq, inArray, lt, sql } from 'drizzle-orm';
import { runOutcomes, runs } from '../db/schema.ts';
import type { Tx } from '../db/client.ts';
import { ConflictError, NotFoundError, ValidationError } from '../errors.ts';
import { newId } from '../lib/ids.ts';
import { assertValid } from '../lib/validate.ts';
import { TABLE_FLAG_PREFIX } from '../engine/affinity.ts';
import { emptyCounts, PHASES, RUN_STATUSES, TERMINAL, type Phase, type RunCounts, type RunError, type RunStatus, type PhaseTiming } from '../engine/status.ts';
import { recordAudit } from './audit.ts';
import type { Actor } from './context.ts';
import { decodeCursor, iso, pageLimit, requireScope, toPage, type Page } from './common.ts';
import type { ServiceDeps } from './deps.ts';
import type { ScheduleT, SyncService } from './syncs.ts';
import { exchangesForRecords } from './debugger.ts';

// Runs: triggering, reading, cancelling, and the per-row records. The worker executes them
// (src/engine); this service is what REST, GraphQL and the scheduler call.

/** The operations a run record can name (insert/update/delete, or none for an invalid row). */
export const RECORD_OPERATIONS = ['insert', 'update', 'delete', 'none'] as const;
export type RecordOperation = (typeof RECORD_OPERATIONS)[number];

const OpCountsT = Type.Object({ insert: Type.Integer(), update: Type.Integer(), delete: Type.Integer() });
export const RunView = Type.Object(
  {
    id: Type.String(),
    syncId: Type.String(),
    status: Type.Union(RUN_STATUSES.map((s) => Type.Literal(s))),
    phase: Type.Unsafe<Phase | null>({ type: ['string', 'null'], enum: [...PHASES, null], description: 'The phase the run is in; null while it is queued' }),
    trigger: Type.Union([Type.Literal('manual'), Type.Literal('schedule'), Type.Literal('api')]),
    fullResync: Type.Boolean(),
    dryRun: Type.Boolean({ description: 'Planned and reported only: nothing was sent and the snapshot was left untouched' }),
    allowDeletions: Type.Boolean({ description: 'The trigger allowed this run past the deletion guard' }),
    sample: Type.Union(
      [
        Type.Array(
          Type.Object({
            primaryKey: Type.String(),
            operation: Type.Union([Type.Literal('insert'), Type.Literal('update'), Type.Literal('delete')]),
            payload: Type.Unknown(),
            recordId: Type.Union([Type.String(), Type.Null()]),
          }),
        ),
        Type.Null(),
      ],
      { description: 'Dry runs: up to 20 planned operations of each kind with the payloads they would send (invalid rows are in the run records)' },
    ),
    queuedAt: Type.String({ format: 'date-time' }),
    startedAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
    finishedAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
    phases: Type.Array(Type.Object({ name: Type.String(), startedAt: Type.String(), finishedAt: Type.Union([Type.String(), Type.Null()]) })),
    counts: Type.Object({ queried: Type.Integer(), invalid: Type.Integer(), planned: OpCountsT, succeeded: OpCountsT, rejected: OpCountsT }),
    error: Type.Union([
      Type.Object({ code: Type.String(), message: Type.String(), hint: Type.Optional(Type.String()), retryable: Type.Boolean() }),
      Type.Null(),
    ]),
  },
  { $id: 'Run' },
);
export const RunTrigger = Type.Object(
  {
    fullResync: Type.Optional(Type.Boolean({ default: false, description: 'Send every row, as if the destination held nothing' })),
    dryRun: Type.Optional(Type.Boolean({ default: false, description: 'Plan and report counts and sample payloads; send nothing; leave the snapshot untouched' })),
    allowDeletions: Type.Optional(Type.Boolean({ default: false, description: "Let this one run delete past the sync's deletion guard" })),
    callbackUrl: Type.Optional(Type.String({ format: 'uri', pattern: '^https?://', maxLength: 2000, description: 'Receives the signed run.completed event' })),
  },
  { additionalProperties: false, $id: 'RunTrigger' },
);
export const RunRecordView = Type.Object(
  {
    primaryKey: Type.String(),
    operation: Type.Unsafe<RecordOperation>({ type: 'string', enum: [...RECORD_OPERATIONS], description: 'What the run did (or planned) with the row; none: nothing (an invalid row)' }),
    status: Type.Union([Type.Literal('succeeded'), Type.Literal('rejected'), Type.Literal('invalid')]),
    error: Type.Union([Type.Object({ code: Type.String(), message: Type.String() }), Type.Null()]),
    attempts: Type.Integer({ description: 'Requests that carried this row in this run, across its executions (a send whose outcome an earlier execution never recorded counts once)' }),
    redelivered: Type.Boolean({
      description:
        'The row may have reached the destination more than once in this run: an execution that ended before recording its outcome (a crash, a takeover by another worker, a plan lost with PostgreSQL) had sent it, and it was sent again',
    }),
    recordId: Type.Optional(Type.Union([Type.String(), Type.Null()], { description: "The destination's id of the record this row wrote, when it returned one" })),
    runId: Type.String(),
    createdAt: Type.String({ format: 'date-time' }),
    batch: Type.Optional(Type.Union([Type.Integer(), Type.Null()])),
    exchanges: Type.Optional(
      Type.Array(
        Type.Object({
          request: Type.Object({ method: Type.String(), url: Type.String(), headers: Type.Record(Type.String(), Type.String()), body: Type.Optional(Type.String()), bodyTruncated: Type.Optional(Type.Boolean()) }),
          response: Type.Union([
            Type.Object({ status: Type.Integer(), headers: Type.Record(Type.String(), Type.String()), body: Type.Optional(Type.String()), bodyTruncated: Type.Optional(Type.Boolean()) }),
            Type.Null(),
          ]),
          durationMs: Type.Integer(),
          batch: Type.Integer(),
          at: Type.String({ format: 'date-time' }),
        }),
        { description: 'Row debugger (with ?primaryKey=): the destination requests that carried this row and their responses, auth redacted, kept BACKHAUL_DEBUGGER_RETENTION_DAYS' },
      ),
    ),
  },
  { $id: 'RunRecord' },
);
export type RunViewT = Static<typeof RunView>;
export type RunRecordViewT = Static<typeof RunRecordView>;
export type RunTriggerInput = Static<typeof RunTrigger>;
export type RunRow = typeof runs.$inferSelect;
export type RunTriggerKind = 'manual' | 'schedule' | 'api';

export function runView(r: RunRow): RunViewT {
  return {
    id: r.id,
    syncId: r.syncId,
    status: r.status as RunStatus,
    // A terminal run has no current phase (the engine may leave its last one in the row).
    phase: TERMINAL.has(r.status as RunStatus) ? null : (r.phase as Phase | null),
    trigger: r.trigger as RunTriggerKind,
    fullResync: r.fullResync,
    dryRun: r.dryRun,
    allowDeletions: r.allowDeletions,
    sample: (r.planSample as RunViewT['sample']) ?? null,
    queuedAt: iso(r.queuedAt)!,
    startedAt: iso(r.startedAt),
    finishedAt: iso(r.finishedAt),
    phases: r.phases as PhaseTiming[],
    counts: r.counts as RunCounts,
    error: (r.error as RunError | null) ?? null,
  };
}

/**
 * Enqueues the run's job in the caller's transaction (graphile-worker's SQL API), one queue per
 * sync, flagged for the worker pool that ran the sync's last finished run (engine/affinity.ts).
 */
export async function enqueueRun(tx: Tx, run: { id: string; syncId: string }): Promise<void> {
  await tx.execute(
    sql`select graphile_worker.add_job('backhaul_run', json_build_object('runId', ${run.id}::text), queue_name => ${`sync:${run.syncId}`}::text, job_key => ${`run:${run.id}`}::text, max_attempts => 25,
          flags => (select array[${TABLE_FLAG_PREFIX}::text || r.worker_id] from runs r
                    where r.sync_id = ${run.syncId} and r.worker_id is not null and r.status in ('succeeded', 'partially_succeeded') order by r.id desc limit 1))`,
  );
}

/**
 * The outbox job of a terminal run (`backhaul_run_finished`: run.completed webhooks, the
 * trigger's callback, alert rules), enqueued in the transaction that makes the run terminal.
 * One per run (its job key); the task itself emits at most once (runs.completed_emitted_at).
 */
export async function enqueueRunFinished(tx: Tx, runId: string): Promise<void> {
  // In the same statement: the sequence runs waiting for this run (as their current step) get
  // their advance job (src/domain/sequences.ts), so the next step is enqueued whatever crashes.
  await tx.execute(
    sql`with waiting as (
          select graphile_worker.add_job('backhaul_sequence_advance', json_build_object('sequenceRunId', sr.id), job_key => 'sequence-advance:' || sr.id, max_attempts => 25)
          from sequence_runs sr where sr.current_run_id = ${runId} and sr.status = 'running')
        select graphile_worker.add_job('backhaul_run_finished', json_build_object('runId', ${runId}::text), job_key => ${`run-finished:${runId}`}::text, max_attempts => 25),
               (select count(*) from waiting) as sequences`,
  );
}

export async function publishRun(tx: Tx, r: { id: string; syncId: string; workspaceId: string; status: string; phase: string | null }): Promise<void> {
  const payload = JSON.stringify({ runId: r.id, syncId: r.syncId, workspaceId: r.workspaceId, status: r.status, phase: r.phase });
  await tx.execute(sql`select pg_notify('backhaul_runs', ${payload})`);
}

/** What a scheduled slot found and did (RunService.fireScheduled). */
export interface ScheduledFire {
  workspaceId: string;
  enabled: boolean;
  schedule: ScheduleT;
  version: number;
  createdAt: Date;
  /** The run queued or running that made the slot skip. */
  active: string | null;
  /** The run the slot queued. */
  created: string | null;
  /** The next slot, when the statement planned it (an enabled interval schedule, `planAfter` given). */
  planned: Date | null;
}
type ScheduledFireRow = {
  workspace_id: string;
  enabled: boolean;
  schedule: ScheduleT;
  version: number;
  created_at: Date | string;
  active: string | null;
  created: string | null;
  planned: Date | string | null;
};

export class RunService {
  private readonly deps: ServiceDeps;
  private readonly syncs: SyncService;
  constructor(deps: ServiceDeps, syncs: SyncService) {
    this.deps = deps;
    this.syncs = syncs;
  }

  private get db() {
    return this.deps.database.db;
  }

  /**
   * Creates a queued run and its job atomically. A sync that already has a queued run gets that
   * run back (created: false); while one is running, the new run queues behind it.
   */
  async trigger(actor: Actor, syncRef: string, input: RunTriggerInput = {}, kind: RunTriggerKind = 'api', outer: Tx = this.db): Promise<{ run: RunViewT; created: boolean }> {
    requireScope(actor, 'write');
    assertValid(RunTrigger, input);
    // In the caller's transaction when given one (a sequence's step: a savepoint), else its own.
    return outer.transaction(async (tx) => {
      // The row lock serialises concurrent triggers of one sync.
      const sync = await this.syncs.row(tx, actor.workspaceId, syncRef, { forUpdate: true });
      if (!sync.enabled) {
        throw new ConflictError('sync_disabled', `Sync "${sync.slug}" is disabled.`, { hint: 'Enable it (PATCH {"enabled": true}) to run it.' });
      }
      // A queued run with the same options is the run this trigger asks for; a dry run never
      // stands for a real one (nor the reverse): it queues behind it.
      const [queued] = await tx
        .select()
        .from(runs)
        .where(and(eq(runs.syncId, sync.id), eq(runs.status, 'queued'), eq(runs.dryRun, input.dryRun ?? false)))
        .limit(1);
      if (queued) return { run: runView(queued), created: false };
      const id = newId('run');
      const [row] = await tx
        .insert(runs)
        .values({ id, workspaceId: actor.workspaceId, syncId: sync.id, status: 'queued', trigger: kind, fullResync: input.fullResync ?? false, dryRun: input.dryRun ?? false, allowDeletions: input.allowDeletions ?? false, callbackUrl: input.callbackUrl ?? null, counts: emptyCounts() })
        .returning();
      await enqueueRun(tx, row);
      await recordAudit(tx, actor, 'trigger', 'run', id, (['fullResync', 'dryRun', 'allowDeletions'] as const).filter((k) => input[k]));
      await publishRun(tx, row);
      return { run: runView(row), created: true };
    });
  }

  /**
   * A scheduled slot, in one statement (the scheduler's trigger; system actor): reads the sync
   * (locking its row against triggers and changes, which lock it FOR UPDATE; NO KEY UPDATE does not
   * wait for the key-share locks of a run's writes) and whether it has a run queued or running, and when it
   * is enabled and has none, creates the queued run with what trigger() writes with it: its job,
   * audit event and notification. A run triggered while this statement waited for the row is not
   * in its snapshot; runs_one_queued_uq makes the insert do nothing then.
   * With `planAfter`, an enabled interval schedule's next slot is planned in the same statement:
   * the first slot of its grid (anchor, or the sync's creation to the millisecond, + k ×
   * everySeconds) strictly after `planAfter`, as nextFireTime computes it, from the row as locked
   * (a change waiting on the lock re-plans after it). Other schedules are left to the caller.
   * Returns null when the sync is gone; else its schedule fields, the active run that made the
   * slot skip (or null), the created run's id (or null) and the planned slot (or null).
   */
  async fireScheduled(syncId: string, planAfter?: Date): Promise<ScheduledFire | null> {
    const id = newId('run');
    const rows = await this.deps.database.sql<ScheduledFireRow[]>`
      with s as materialized (
        select id, workspace_id, enabled, schedule, version, created_at from syncs where id = ${syncId} for no key update
      ), active as materialized (
        select r.id from runs r where r.sync_id = ${syncId} and r.status in ('queued', 'running') limit 1
      ), created as (
        insert into runs (id, workspace_id, sync_id, status, trigger, full_resync, callback_url, counts)
        select ${id}, s.workspace_id, s.id, 'queued', 'schedule', false, null, ${JSON.stringify(emptyCounts())}::jsonb from s
        where s.enabled and not exists (select 1 from active)
        on conflict (sync_id, dry_run) where status = 'queued' do nothing
        returning id, workspace_id, sync_id, status, phase
      ), job as (
        select graphile_worker.add_job('backhaul_run', json_build_object('runId', c.id), queue_name => 'sync:' || c.sync_id,
                                       job_key => 'run:' || c.id, max_attempts => 25,
                                       flags => (select array[${TABLE_FLAG_PREFIX}::text || r.worker_id] from runs r
                                                 where r.sync_id = c.sync_id and r.worker_id is not null and r.status in ('succeeded', 'partially_succeeded') order by r.id desc limit 1))
        from created c
      ), audit as (
        insert into audit_events (id, workspace_id, actor_key_id, action, resource_type, resource_id, changed_fields, request_id)
        select ${newId('audit')}, c.workspace_id, null, 'trigger', 'run', c.id, '{}', null from created c
      ), notified as (
        select pg_notify('backhaul_runs', json_build_object('runId', c.id, 'syncId', c.sync_id, 'workspaceId', c.workspace_id, 'status', c.status, 'phase', c.phase)::text)
        from created c
      ), grid as (
        select coalesce((s.schedule->>'anchor')::timestamptz, date_trunc('milliseconds', s.created_at)) as anchor,
               (s.schedule->>'everySeconds')::int as every
        from s where ${planAfter ? true : false}::boolean and s.enabled and s.schedule->>'type' = 'interval'
      ), slot as (
        select g.anchor + (floor(extract(epoch from (${(planAfter ?? new Date(0)).toISOString()}::timestamptz - g.anchor)) / g.every) + 1) * g.every * interval '1 second' as at
        from grid g
      ), planned as (
        select slot.at, graphile_worker.add_job('backhaul_schedule', json_build_object('syncId', ${syncId}::text), run_at => slot.at,
                                                job_key => ${`schedule:${syncId}`}::text, job_key_mode => 'replace', max_attempts => 5)
        from slot
      )
      select s.workspace_id, s.enabled, s.schedule, s.version, s.created_at, (select id from active) as active,
             (select id from created) as created, (select at from planned) as planned,
             (select count(*) from job) + (select count(*) from notified) as side_effects
      from s`;
    const r = rows[0];
    if (!r) return null;
    return {
      workspaceId: r.workspace_id,
      enabled: r.enabled,
      schedule: r.schedule,
      version: r.version,
      createdAt: new Date(r.created_at),
      active: r.active,
      created: r.created,
      planned: r.planned === null ? null : new Date(r.planned),
    };
  }

  async get(actor: Actor, id: string): Promise<RunViewT> {
    requireScope(actor, 'read');
    return runView(await this.row(this.db, actor.workspaceId, id));
  }

  async row(tx: Tx, workspaceId: string, id: string): Promise<RunRow> {
    const [row] = await tx.select().from(runs).where(and(eq(runs.id, id), eq(runs.workspaceId, workspaceId)));
    if (!row) throw new NotFoundError('run', id);
    return row;
  }

  async listForSync(actor: Actor, syncRef: string, params: { limit?: number; cursor?: string; status?: string } = {}): Promise<Page<RunViewT>> {
    requireScope(actor, 'read');
    const sync = await this.syncs.row(this.db, actor.workspaceId, syncRef);
    const limit = pageLimit(params.limit);
    const after = decodeCursor(params.cursor);
    const conds = [eq(runs.syncId, sync.id), eq(runs.workspaceId, actor.workspaceId)];
    if (after) conds.push(lt(runs.id, after));
    if (params.status) conds.push(eq(runs.status, params.status));
    // Newest first.
    const rows = await this.db.select().from(runs).where(and(...conds)).orderBy(desc(runs.id)).limit(limit + 1);
    return toPage(rows, limit, runView);
  }

  /** The newest run of each sync (GraphQL's lastRun loader). */
  async latestBySyncIds(workspaceId: string, syncIds: string[]): Promise<Map<string, RunViewT>> {
    if (!syncIds.length) return new Map();
    const rows = await this.db
      .selectDistinctOn([runs.syncId])
      .from(runs)
      .where(and(eq(runs.workspaceId, workspaceId), inArray(runs.syncId, syncIds)))
      .orderBy(runs.syncId, desc(runs.id));
    return new Map(rows.map((r) => [r.syncId, runView(r)]));
  }

  /** Queued: cancelled at once (its job removed). Running: the worker stops between batches. */
  async cancel(actor: Actor, id: string, outer: Tx = this.db): Promise<RunViewT> {
    requireScope(actor, 'write');
    return outer.transaction(async (tx) => {
      const [cur] = await tx.select().from(runs).where(and(eq(runs.id, id), eq(runs.workspaceId, actor.workspaceId))).for('update');
      if (!cur) throw new NotFoundError('run', id);
      if (TERMINAL.has(cur.status as RunStatus)) {
        throw new ConflictError('run_finished', `Run ${id} has already finished (${cur.status}).`);
      }
      let row: RunRow;
      if (cur.status === 'queued') {
        await tx.execute(sql`select graphile_worker.remove_job(${`run:${id}`}::text)`);
        [row] = await tx
          .update(runs)
          .set({ status: 'cancelled', cancelRequestedAt: new Date(), finishedAt: new Date(), error: { code: 'cancelled', message: 'Cancelled before it started.', retryable: false } })
          .where(eq(runs.id, id))
          .returning();
        await enqueueRunFinished(tx, id);
      } else {
        [row] = await tx.update(runs).set({ cancelRequestedAt: cur.cancelRequestedAt ?? new Date() }).where(eq(runs.id, id)).returning();
      }
      await recordAudit(tx, actor, 'cancel', 'run', id);
      await publishRun(tx, row);
      return runView(row);
    });
  }

  async records(
    actor: Actor,
    runId: string,
    params: { status?: string; operation?: string; primaryKey?: string; redelivered?: boolean; limit?: number; cursor?: string },
  ): Promise<Page<RunRecordViewT>> {
    requireScope(actor, 'read');
    await this.row(this.db, actor.workspaceId, runId);
    const limit = pageLimit(params.limit);
    const after = decodeCursor(params.cursor);
    const conds = [eq(runOutcomes.runId, runId)];
    if (params.status) conds.push(eq(runOutcomes.status, params.status));
    if (params.operation) conds.push(eq(runOutcomes.operation, params.operation));
    if (params.primaryKey !== undefined) conds.push(eq(runOutcomes.primaryKey, params.primaryKey));
    if (params.redelivered !== undefined) conds.push(eq(runOutcomes.redelivered, params.redelivered));
    if (after) {
      const [pk, op] = splitCursor(after);
      conds.push(sql`(${runOutcomes.primaryKey}, ${runOutcomes.operation}) > (${pk}, ${op})`);
    }
    const rows = await this.db.select().from(runOutcomes).where(and(...conds)).orderBy(runOutcomes.primaryKey, runOutcomes.operation).limit(limit + 1);
    const page = toPage(
      rows.map((r) => ({ ...r, id: `${r.primaryKey}\u0000${r.operation}` })),
      limit,
      recordView,
    );
    // Row debugger: looking up one primary key also shows what was sent for it and what came back.
    if (params.primaryKey !== undefined && page.data.length) {
      const ex = await exchangesForRecords(this.deps.database, runId, rows.slice(0, limit).map((r) => ({ primaryKey: r.primaryKey, batch: r.batch })));
      for (const rec of page.data) rec.exchanges = ex.get(rec.primaryKey) ?? [];
    }
    return page;
  }

  /** One row's outcomes across runs, newest first. */
  async history(actor: Actor, syncRef: string, primaryKey: string, params: { limit?: number; cursor?: string } = {}): Promise<Page<RunRecordViewT>> {
    requireScope(actor, 'read');
    const sync = await this.syncs.row(this.db, actor.workspaceId, syncRef);
    const limit = pageLimit(params.limit);
    const after = decodeCursor(params.cursor);
    // By the run-records primary key, probed once per run of the sync, and the run's bulk records
    // (no per-row history index to maintain).
    const conds = [
      sql`${runOutcomes.runId} in (select ${runs.id} from ${runs} where ${runs.syncId} = ${sync.id} and ${runs.workspaceId} = ${actor.workspaceId})`,
      eq(runOutcomes.primaryKey, primaryKey),
    ];
    if (after) {
      const [rid, op] = splitCursor(after);
      conds.push(sql`(${runOutcomes.runId}, ${runOutcomes.operation}) < (${rid}, ${op})`);
    }
    const rows = await this.db.select().from(runOutcomes).where(and(...conds)).orderBy(desc(runOutcomes.runId), desc(runOutcomes.operation)).limit(limit + 1);
    return toPage(
      rows.map((r) => ({ ...r, id: `${r.runId}\u0000${r.operation}` })),
      limit,
      recordView,
    );
  }
}

function splitCursor(c: string): [string, string] {
  const i = c.indexOf('\u0000');
  if (i < 0) throw new ValidationError('The cursor is not one this API returned.', [{ path: '/cursor', message: 'is not a valid cursor' }], 'invalid_cursor');
  return [c.slice(0, i), c.slice(i + 1)];
}

function recordView(r: typeof runOutcomes.$inferSelect): RunRecordViewT {
  return {
    primaryKey: r.primaryKey,
    operation: r.operation as RecordOperation,
    status: r.status as RunRecordViewT['status'],
    error: r.errorCode ? { code: r.errorCode, message: r.errorMessage ?? '' } : null,
    attempts: r.attempts,
    redelivered: r.redelivered,
    recordId: r.recordId,
    runId: r.runId,
    createdAt: iso(r.createdAt)!,
    batch: r.batch,
  };
}

