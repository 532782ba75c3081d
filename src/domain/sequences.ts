import { Type, type Static } from '@sinclair/typebox';
import { and, asc, desc, eq, inArray, lt, sql } from 'drizzle-orm';
import { runs, sequenceRuns, sequenceSteps, sequences, syncs } from '../db/schema.ts';
import type { Tx } from '../db/client.ts';
import { ConflictError, isAppError, NotFoundError } from '../errors.ts';
import { newId } from '../lib/ids.ts';
import { assertValid } from '../lib/validate.ts';
import { TERMINAL, type RunError, type RunStatus } from '../engine/status.ts';
import { recordAudit } from './audit.ts';
import { systemActor, type Actor } from './context.ts';
import { changedFields, checkVersion, decodeCursor, iso, isUniqueViolation, pageLimit, requireScope, slugTaken, toPage, type Page } from './common.ts';
import { Name, Slug } from './connections.ts';
import type { ServiceDeps } from './deps.ts';
import { checkRefSlugs, getByRef, getReferenced, putBySlug, type PutOptions } from './refs.ts';
import { acceptingReadOnly, readOnlyFields } from './read-only.ts';
import { listOrdered, type ListOptions } from './list.ts';
import { withoutDefaults } from './defaults.ts';
import type { RunService, RunTriggerKind } from './runs.ts';
import { DEFAULT_SCHEDULE, Schedule, validateSchedule, type ScheduleT } from './syncs.ts';
import type { WebhookService } from './webhooks.ts';

// Sequences: an ordered list of syncs run one after another, on their own schedule or trigger
// (Hightouch's and Census's "sequences"). A sequence run triggers its first step's sync run; when
// that run is terminal, the transaction that made it so (enqueueRunFinished) enqueues the
// sequence run's advance job, which records the step and triggers the next one — in one
// transaction, so a worker restarted at any point carries on from the row. A step whose sync
// already has a queued run joins it (the sync's trigger semantics); one running queues behind it.
// A step fails when its run ends failed or cancelled (partially_succeeded is not a failure):
// onFailure "stop" ends the sequence run failed, naming the step; "continue" runs the next steps
// and ends the sequence run failed if any step failed.

export const SEQUENCE_RUN_STATUSES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'] as const;
export type SequenceRunStatus = (typeof SEQUENCE_RUN_STATUSES)[number];
const TERMINAL_SEQUENCE = new Set<string>(['succeeded', 'failed', 'cancelled']);
export const STEP_STATUSES = ['pending', 'running', 'succeeded', 'partially_succeeded', 'failed', 'cancelled', 'skipped'] as const;
export type StepStatus = (typeof STEP_STATUSES)[number];
export const ON_FAILURE = ['stop', 'continue'] as const;
export type OnFailure = (typeof ON_FAILURE)[number];
/** Channel of pg_notify sequence run updates (the waiter of ?wait= listens on it). */
export const SEQUENCE_RUN_CHANNEL = 'backhaul_sequence_runs';
/** Most steps a sequence may have. */
export const MAX_STEPS = 50;

const StepInput = Type.Object(
  {
    syncId: Type.String({ minLength: 1, maxLength: 100, description: 'Id or slug of a sync of this workspace' }),
    syncSlug: Type.Optional(
      Type.String({ readOnly: true, description: "The sync's slug (read-only: accepted when it names the same sync, so a GET body can be PUT back)" }),
    ),
  },
  { additionalProperties: false },
);
const OnFailureT = Type.Unsafe<OnFailure>({
  type: 'string',
  enum: [...ON_FAILURE],
  default: 'stop',
  description: 'stop: a failed step (its run failed or was cancelled) ends the sequence run, later steps are skipped; continue: the next steps run anyway',
});

const sequenceFields = {
  name: Name,
  steps: Type.Array(StepInput, { minItems: 1, maxItems: MAX_STEPS, description: 'The syncs to run, in order (a sync may appear more than once)' }),
  schedule: Type.Optional(Schedule),
  enabled: Type.Optional(Type.Boolean({ default: true, description: 'A disabled sequence is not scheduled and cannot be triggered' })),
  onFailure: Type.Optional(OnFailureT),
};

export const SequenceCreate = Type.Object({ slug: Slug, ...sequenceFields }, { additionalProperties: false, $id: 'SequenceCreate' });
const SequencePutBase = Type.Object({ slug: Type.Optional(Slug), ...sequenceFields }, { additionalProperties: false });
export const SequencePatch = withoutDefaults(
  Type.Partial(Type.Object({ slug: Slug, ...sequenceFields }), { additionalProperties: false, $id: 'SequencePatch', description: 'Only the fields sent change; steps, when sent, replace the whole list.' }),
);
export const SequenceView = Type.Object(
  {
    id: Type.String(),
    slug: Type.String(),
    name: Type.String(),
    steps: Type.Array(Type.Object({ syncId: Type.String(), syncSlug: Type.String({ description: "The sync's slug (follows a rename)" }) })),
    schedule: Schedule,
    enabled: Type.Boolean(),
    onFailure: Type.Unsafe<OnFailure>({ type: 'string', enum: [...ON_FAILURE] }),
    createdAt: Type.String({ format: 'date-time' }),
    updatedAt: Type.String({ format: 'date-time' }),
    version: Type.Integer(),
  },
  { $id: 'Sequence' },
);
export const SequencePut = acceptingReadOnly(SequencePutBase, SequenceView, { $id: 'SequencePut' });

const StepError = Type.Union([Type.Object({ code: Type.String(), message: Type.String() }), Type.Null()]);
export const SequenceRunView = Type.Object(
  {
    id: Type.String(),
    sequenceId: Type.String(),
    status: Type.Unsafe<SequenceRunStatus>({ type: 'string', enum: [...SEQUENCE_RUN_STATUSES] }),
    trigger: Type.Union([Type.Literal('manual'), Type.Literal('schedule'), Type.Literal('api')]),
    onFailure: Type.Unsafe<OnFailure>({ type: 'string', enum: [...ON_FAILURE], description: 'As the sequence said when this run was triggered' }),
    steps: Type.Array(
      Type.Object({
        position: Type.Integer({ description: '1 for the first step' }),
        syncId: Type.String(),
        runId: Type.Union([Type.String(), Type.Null()], { description: "The step's sync run (null until the step comes up, or when it could not be triggered)" }),
        status: Type.Unsafe<StepStatus>({
          type: 'string',
          enum: [...STEP_STATUSES],
          description: "pending (not reached), running (its run is queued or running), its run's terminal status, or skipped (a step before it failed with onFailure stop, or the sequence run was cancelled)",
        }),
        error: StepError,
      }),
      { description: 'The steps as they were when the run was triggered' },
    ),
    currentStep: Type.Union([Type.Integer(), Type.Null()], { description: 'Position of the step being run; null when queued or finished' }),
    queuedAt: Type.String({ format: 'date-time' }),
    startedAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
    finishedAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
    error: Type.Union([
      Type.Object({
        code: Type.String({ description: 'step_failed, or cancelled' }),
        message: Type.String(),
        position: Type.Optional(Type.Integer({ description: 'The (first) failed step' })),
        syncId: Type.Optional(Type.String()),
      }),
      Type.Null(),
    ]),
  },
  { $id: 'SequenceRun' },
);

export type SequenceCreateInput = Static<typeof SequenceCreate>;
export type SequencePatchInput = Partial<SequenceCreateInput>;
export type SequencePutInput = Static<typeof SequencePutBase>;
export type SequenceViewT = Static<typeof SequenceView>;
export type SequenceRunViewT = Static<typeof SequenceRunView>;
export type SequenceStepViewT = SequenceViewT['steps'][number];
export type SequenceRunStepViewT = SequenceRunViewT['steps'][number];
type Row = typeof sequences.$inferSelect;
type RunRowS = typeof sequenceRuns.$inferSelect;

/** A step of a sequence run as stored (sequence_runs.steps). */
interface StepState {
  syncId: string;
  /** The sync's slug when the run was triggered (for messages). */
  syncSlug?: string;
  runId: string | null;
  /** The sequence triggered that run (false: it joined a run already queued); only its own run is cancelled with it. */
  created: boolean;
  status: StepStatus;
  error: { code: string; message: string } | null;
}

function baseView(r: Row): Omit<SequenceViewT, 'steps'> {
  return {
    id: r.id,
    slug: r.slug,
    name: r.name,
    schedule: r.schedule as ScheduleT,
    enabled: r.enabled,
    onFailure: r.onFailure as OnFailure,
    createdAt: iso(r.createdAt)!,
    updatedAt: iso(r.updatedAt)!,
    version: r.version,
  };
}

export function sequenceRunView(r: RunRowS): SequenceRunViewT {
  const steps = r.steps as StepState[];
  return {
    id: r.id,
    sequenceId: r.sequenceId,
    status: r.status as SequenceRunStatus,
    trigger: r.trigger as SequenceRunViewT['trigger'],
    onFailure: r.onFailure as OnFailure,
    steps: steps.map((s, i) => ({ position: i + 1, syncId: s.syncId, runId: s.runId, status: s.status, error: s.error })),
    currentStep: r.currentStep === null ? null : r.currentStep + 1,
    queuedAt: iso(r.queuedAt)!,
    startedAt: iso(r.startedAt),
    finishedAt: iso(r.finishedAt),
    error: (r.error as SequenceRunViewT['error']) ?? null,
  };
}

const failedStep = (s: StepState) => s.status === 'failed' || s.status === 'cancelled';

export class SequenceService {
  private readonly deps: ServiceDeps;
  private readonly runs: RunService;
  private readonly webhooks: WebhookService;
  constructor(deps: ServiceDeps, runs: RunService, webhooks: WebhookService) {
    this.deps = deps;
    this.runs = runs;
    this.webhooks = webhooks;
  }

  private get db() {
    return this.deps.database.db;
  }

  // ---- The resource ------------------------------------------------------------------------------

  /** The steps (with their syncs' slugs) of the sequences named, in order. */
  private async stepsOf(tx: Tx, ids: string[]): Promise<Map<string, SequenceViewT['steps']>> {
    const out = new Map<string, SequenceViewT['steps']>(ids.map((id) => [id, []]));
    if (!ids.length) return out;
    const rows = await tx
      .select({ sequenceId: sequenceSteps.sequenceId, syncId: sequenceSteps.syncId, syncSlug: syncs.slug })
      .from(sequenceSteps)
      .innerJoin(syncs, eq(syncs.id, sequenceSteps.syncId))
      .where(inArray(sequenceSteps.sequenceId, ids))
      .orderBy(sequenceSteps.sequenceId, asc(sequenceSteps.position));
    for (const r of rows) out.get(r.sequenceId)!.push({ syncId: r.syncId, syncSlug: r.syncSlug });
    return out;
  }

  private async views(tx: Tx, rows: Row[]): Promise<SequenceViewT[]> {
    const steps = await this.stepsOf(tx, rows.map((r) => r.id));
    return rows.map((r) => ({ ...baseView(r), steps: steps.get(r.id) ?? [] }));
  }

  async list(actor: Actor, params: ListOptions & { enabled?: boolean } = {}): Promise<Page<SequenceViewT>> {
    requireScope(actor, 'read');
    const filters = [params.enabled !== undefined ? eq(sequences.enabled, params.enabled) : undefined];
    const page = await listOrdered(this.db, sequences, actor.workspaceId, filters, params, (r): SequenceViewT => ({ ...baseView(r), steps: [] }));
    const steps = await this.stepsOf(this.db, page.data.map((v) => v.id));
    for (const v of page.data) v.steps = steps.get(v.id) ?? [];
    return page;
  }

  async get(actor: Actor, ref: string): Promise<SequenceViewT> {
    requireScope(actor, 'read');
    return (await this.views(this.db, [await this.row(this.db, actor.workspaceId, ref)]))[0];
  }

  async row(tx: Tx, workspaceId: string, ref: string, opts: { forUpdate?: boolean } = {}): Promise<Row> {
    return getByRef(tx, sequences, 'sequence', workspaceId, ref, opts);
  }

  /** Steps' sync refs → ids of this workspace's syncs (422 invalid_reference naming the step otherwise: another workspace's sync is not found). */
  private async resolveSteps(tx: Tx, actor: Actor, steps: SequenceCreateInput['steps']): Promise<string[]> {
    const ids: string[] = [];
    for (const [i, s] of steps.entries()) {
      const sync = await getReferenced(tx, syncs, 'sync', actor.workspaceId, s.syncId, `/steps/${i}/syncId`);
      checkRefSlugs([[`steps/${i}/syncSlug`, s.syncSlug, sync.slug]]);
      ids.push(sync.id);
    }
    return ids;
  }

  private async writeSteps(tx: Tx, sequenceId: string, syncIds: string[]): Promise<void> {
    await tx.delete(sequenceSteps).where(eq(sequenceSteps.sequenceId, sequenceId));
    await tx.insert(sequenceSteps).values(syncIds.map((syncId, position) => ({ sequenceId, position, syncId })));
  }

  async create(actor: Actor, input: SequenceCreateInput, outer: Tx = this.db): Promise<SequenceViewT> {
    requireScope(actor, 'write');
    assertValid(SequenceCreate, input);
    const id = newId('sequence');
    try {
      return await outer.transaction(async (tx) => {
        const stepIds = await this.resolveSteps(tx, actor, input.steps);
        const values = { slug: input.slug, name: input.name, schedule: validateSchedule(input.schedule ?? DEFAULT_SCHEDULE), enabled: input.enabled ?? true, onFailure: input.onFailure ?? 'stop' };
        const [row] = await tx.insert(sequences).values({ id, workspaceId: actor.workspaceId, ...values }).returning();
        await this.writeSteps(tx, id, stepIds);
        await recordAudit(tx, actor, 'create', 'sequence', id, [...Object.keys(values), 'steps']);
        await this.deps.hooks.sequenceChanged?.(tx, id);
        return (await this.views(tx, [row]))[0];
      });
    } catch (e) {
      if (isUniqueViolation(e, 'sequences_slug_uq')) throw slugTaken('sequence', input.slug);
      throw e;
    }
  }

  async update(actor: Actor, ref: string, input: SequencePatchInput, ifMatch?: string): Promise<SequenceViewT> {
    requireScope(actor, 'write');
    assertValid(SequencePatch, input);
    return this.db.transaction((tx) => this.apply(tx, actor, ref, input, ifMatch, 'update'));
  }

  async put(actor: Actor, ref: string, input: SequencePutInput, ifMatch?: string, opts: PutOptions = {}): Promise<{ created: boolean; value: SequenceViewT }> {
    requireScope(actor, 'write');
    assertValid(SequencePut, input);
    return (opts.tx ?? this.db).transaction((tx) =>
      putBySlug(
        tx,
        sequences,
        actor.workspaceId,
        ref,
        input,
        ifMatch,
        (slug) => this.create(actor, { ...input, slug }, tx),
        // PUT replaces: optional fields not sent go back to their defaults.
        () => this.apply(tx, actor, ref, { schedule: DEFAULT_SCHEDULE, enabled: true, onFailure: 'stop', ...input }, ifMatch, 'replace'),
        { ...opts, readOnly: { view: baseView, fields: readOnlyFields(SequencePutBase, SequenceView) } },
      ),
    );
  }

  private async apply(tx: Tx, actor: Actor, ref: string, input: SequencePatchInput, ifMatch: string | undefined, action: 'update' | 'replace'): Promise<SequenceViewT> {
    const cur = await this.row(tx, actor.workspaceId, ref, { forUpdate: true });
    checkVersion(ifMatch, cur.version);
    const curSteps = (await this.stepsOf(tx, [cur.id])).get(cur.id)!.map((s) => s.syncId);
    const next = {
      slug: input.slug ?? cur.slug,
      name: input.name ?? cur.name,
      schedule: input.schedule ? validateSchedule(input.schedule) : (cur.schedule as ScheduleT),
      enabled: input.enabled ?? cur.enabled,
      onFailure: input.onFailure ?? cur.onFailure,
    };
    const steps = input.steps ? await this.resolveSteps(tx, actor, input.steps) : curSteps;
    const changed = changedFields({ ...cur, steps: curSteps } as unknown as Record<string, unknown>, { ...next, steps }, [...Object.keys(next), 'steps']);
    if (!changed.length) return (await this.views(tx, [cur]))[0];
    try {
      const [row] = await tx.transaction(async (tx2) => {
        const r = await tx2.update(sequences).set({ ...next, version: cur.version + 1, updatedAt: new Date() }).where(eq(sequences.id, cur.id)).returning();
        if (changed.includes('steps')) await this.writeSteps(tx2, cur.id, steps);
        await recordAudit(tx2, actor, action, 'sequence', cur.id, changed);
        await this.deps.hooks.sequenceChanged?.(tx2, cur.id);
        return r;
      });
      return (await this.views(tx, [row]))[0];
    } catch (e) {
      if (isUniqueViolation(e, 'sequences_slug_uq')) throw slugTaken('sequence', next.slug);
      throw e;
    }
  }

  /** Deletes the sequence and its runs (a step's sync run is not cancelled: it belongs to its sync). */
  async delete(actor: Actor, ref: string, ifMatch?: string, outer: Tx = this.db): Promise<void> {
    requireScope(actor, 'write');
    await outer.transaction(async (tx) => {
      const cur = await this.row(tx, actor.workspaceId, ref, { forUpdate: true });
      checkVersion(ifMatch, cur.version);
      await tx.delete(sequences).where(eq(sequences.id, cur.id));
      await recordAudit(tx, actor, 'delete', 'sequence', cur.id);
      await this.deps.hooks.sequenceChanged?.(tx, cur.id);
    });
  }

  /** The sequences a sync is a step of (a sync in a sequence cannot be deleted). */
  async usingSync(tx: Tx, syncId: string): Promise<{ type: string; id: string; slug: string }[]> {
    const rows = await tx
      .selectDistinct({ id: sequences.id, slug: sequences.slug })
      .from(sequenceSteps)
      .innerJoin(sequences, eq(sequences.id, sequenceSteps.sequenceId))
      .where(eq(sequenceSteps.syncId, syncId))
      .limit(20);
    return rows.map((r) => ({ type: 'sequence', ...r }));
  }

  // ---- Sequence runs -----------------------------------------------------------------------------

  /**
   * Starts a sequence run: queued, with its advance job, in one transaction. A sequence has at
   * most one active run: when one is queued or running it is returned (created: false).
   * Errors: 404, 409 sequence_disabled.
   */
  async trigger(actor: Actor, ref: string, kind: RunTriggerKind = 'api'): Promise<{ run: SequenceRunViewT; created: boolean }> {
    requireScope(actor, 'write');
    return this.db.transaction(async (tx) => {
      const seq = await this.row(tx, actor.workspaceId, ref, { forUpdate: true });
      if (!seq.enabled) throw new ConflictError('sequence_disabled', `Sequence "${seq.slug}" is disabled.`, { hint: 'Enable it (PATCH {"enabled": true}) to run it.' });
      const r = await this.start(tx, seq, kind, actor);
      return { run: sequenceRunView(r.row), created: r.created };
    });
  }

  /** In `tx`, with the sequence row locked: the active run, or a new queued one and its advance job. */
  private async start(tx: Tx, seq: Row, kind: RunTriggerKind, actor: Actor): Promise<{ row: RunRowS; created: boolean }> {
    const [active] = await tx
      .select()
      .from(sequenceRuns)
      .where(and(eq(sequenceRuns.sequenceId, seq.id), inArray(sequenceRuns.status, ['queued', 'running'])))
      .limit(1);
    if (active) return { row: active, created: false };
    const current = (await this.stepsOf(tx, [seq.id])).get(seq.id)!;
    const steps: StepState[] = current.map((s) => ({ syncId: s.syncId, syncSlug: s.syncSlug, runId: null, created: false, status: 'pending', error: null }));
    const id = newId('sequenceRun');
    const [row] = await tx
      .insert(sequenceRuns)
      .values({ id, workspaceId: seq.workspaceId, sequenceId: seq.id, status: 'queued', trigger: kind, onFailure: seq.onFailure, steps })
      .returning();
    await enqueueAdvance(tx, id);
    await recordAudit(tx, actor, 'trigger', 'sequence_run', id);
    await publishSequenceRun(tx, row);
    return { row, created: true };
  }

  /**
   * A scheduled slot of the sequence (system actor): starts a run unless one is active or the
   * sequence is disabled. Returns null when the sequence is gone, else whether a run was created.
   */
  async fireScheduled(sequenceId: string): Promise<{ created: boolean } | null> {
    return this.db.transaction(async (tx) => {
      const [seq] = await tx.select().from(sequences).where(eq(sequences.id, sequenceId)).for('no key update');
      if (!seq) return null;
      if (!seq.enabled) return { created: false };
      return { created: (await this.start(tx, seq, 'schedule', systemActor(seq.workspaceId))).created };
    });
  }

  async getRun(actor: Actor, id: string): Promise<SequenceRunViewT> {
    requireScope(actor, 'read');
    return sequenceRunView(await this.runRow(this.db, actor.workspaceId, id));
  }

  async runRow(tx: Tx, workspaceId: string, id: string): Promise<RunRowS> {
    const [row] = await tx.select().from(sequenceRuns).where(and(eq(sequenceRuns.id, id), eq(sequenceRuns.workspaceId, workspaceId)));
    if (!row) throw new NotFoundError('sequence run', id);
    return row;
  }

  /** A sequence's runs, newest first. */
  async listRuns(actor: Actor, ref: string, params: { limit?: number; cursor?: string; status?: string } = {}): Promise<Page<SequenceRunViewT>> {
    requireScope(actor, 'read');
    const seq = await this.row(this.db, actor.workspaceId, ref);
    const limit = pageLimit(params.limit);
    const after = decodeCursor(params.cursor);
    const conds = [eq(sequenceRuns.sequenceId, seq.id), eq(sequenceRuns.workspaceId, actor.workspaceId)];
    if (after) conds.push(lt(sequenceRuns.id, after));
    if (params.status) conds.push(eq(sequenceRuns.status, params.status));
    const rows = await this.db.select().from(sequenceRuns).where(and(...conds)).orderBy(desc(sequenceRuns.id)).limit(limit + 1);
    return toPage(rows, limit, sequenceRunView);
  }

  /**
   * Cancels a sequence run: at once, with its later steps skipped; the current step's run is
   * cancelled too when the sequence triggered it (a run it joined belongs to someone else).
   * Errors: 404, 409 run_finished.
   */
  async cancelRun(actor: Actor, id: string): Promise<SequenceRunViewT> {
    requireScope(actor, 'write');
    return this.db.transaction(async (tx) => {
      const [cur] = await tx.select().from(sequenceRuns).where(and(eq(sequenceRuns.id, id), eq(sequenceRuns.workspaceId, actor.workspaceId))).for('update');
      if (!cur) throw new NotFoundError('sequence run', id);
      if (TERMINAL_SEQUENCE.has(cur.status)) throw new ConflictError('run_finished', `Sequence run ${id} has already finished (${cur.status}).`);
      const steps = (cur.steps as StepState[]).map((s) => ({ ...s }));
      const i = cur.currentStep;
      if (i !== null && steps[i].status === 'running') {
        if (steps[i].created && steps[i].runId) {
          try {
            await this.runs.cancel(actor, steps[i].runId!, tx);
          } catch (e) {
            if (!(isAppError(e) && e.code === 'run_finished')) throw e;
          }
        }
        steps[i].status = 'cancelled';
      }
      for (const s of steps) if (s.status === 'pending') s.status = 'skipped';
      await recordAudit(tx, actor, 'cancel', 'sequence_run', id);
      return sequenceRunView(await this.finish(tx, cur, steps, 'cancelled', { code: 'cancelled', message: 'Cancelled.' }, new Date()));
    });
  }

  /**
   * The advance job (backhaul_sequence_advance): under the sequence run's row lock, records the
   * current step once its run is terminal and triggers the next step, or finishes the sequence
   * run — all in one transaction. Idempotent: a run still active, or a finished sequence run,
   * leaves everything as it is.
   */
  async advance(sequenceRunId: string): Promise<void> {
    await this.db.transaction(async (tx) => {
      const [sr] = await tx.select().from(sequenceRuns).where(eq(sequenceRuns.id, sequenceRunId)).for('update');
      if (!sr || TERMINAL_SEQUENCE.has(sr.status)) return;
      const steps = (sr.steps as StepState[]).map((s) => ({ ...s }));
      const actor = systemActor(sr.workspaceId);
      const kind: RunTriggerKind = sr.trigger === 'schedule' ? 'schedule' : 'api';
      let i = sr.status === 'queued' ? -1 : (sr.currentStep ?? -1);
      const startedAt = sr.startedAt ?? new Date();
      if (i >= 0 && sr.currentRunId) {
        const done = await this.runOutcome(tx, sr.currentRunId);
        if (!done) return; // the step's run is still active: its finish wakes us again
        Object.assign(steps[i], done);
      }
      for (;;) {
        if (i >= 0 && failedStep(steps[i]) && sr.onFailure === 'stop') {
          for (const s of steps) if (s.status === 'pending') s.status = 'skipped';
          await this.finish(tx, { ...sr, startedAt }, steps, 'failed', this.stepError(steps, i), new Date());
          return;
        }
        i++;
        if (i >= steps.length) {
          const first = steps.findIndex(failedStep);
          await this.finish(tx, { ...sr, startedAt }, steps, first < 0 ? 'succeeded' : 'failed', first < 0 ? null : this.stepError(steps, first), new Date());
          return;
        }
        const step = steps[i];
        let runId: string;
        try {
          const t = await this.runs.trigger(actor, step.syncId, {}, kind, tx);
          runId = t.run.id;
          step.created = t.created;
        } catch (e) {
          // The sync cannot run now (disabled, deleted): the step fails with that reason.
          if (!isAppError(e) || e.status >= 500) throw e;
          Object.assign(step, { status: 'failed', error: { code: e.code, message: e.message } });
          continue;
        }
        step.runId = runId;
        // Locked (share) until this commits: a finish racing with us either committed before
        // (seen here) or waits, and then finds this sequence run waiting for its run.
        const done = await this.runOutcome(tx, runId);
        if (done) {
          Object.assign(step, done);
          continue;
        }
        step.status = 'running';
        const [row] = await tx
          .update(sequenceRuns)
          .set({ status: 'running', startedAt, steps, currentStep: i, currentRunId: runId })
          .where(eq(sequenceRuns.id, sr.id))
          .returning();
        await publishSequenceRun(tx, row);
        return;
      }
    });
  }

  /** The run's outcome for its step when it is terminal (locking it against a racing finish), else null. */
  private async runOutcome(tx: Tx, runId: string): Promise<Pick<StepState, 'status' | 'error'> | null> {
    const [run] = await tx.select({ status: runs.status, error: runs.error }).from(runs).where(eq(runs.id, runId)).for('share');
    if (!run) return { status: 'failed', error: { code: 'run_deleted', message: `Run ${runId} no longer exists (its sync was deleted).` } };
    if (!TERMINAL.has(run.status as RunStatus)) return null;
    const err = run.error as RunError | null;
    return { status: run.status as StepStatus, error: err ? { code: err.code, message: err.message } : null };
  }

  private stepError(steps: StepState[], i: number): NonNullable<SequenceRunViewT['error']> {
    const s = steps[i];
    const why = s.error ? `: ${s.error.message}` : '';
    const others = steps.filter((x, j) => j > i && failedStep(x)).length;
    return {
      code: 'step_failed',
      message: `Step ${i + 1} (sync "${s.syncSlug ?? s.syncId}") ${s.status === 'cancelled' ? 'was cancelled' : 'failed'}${why}${others ? ` (and ${others} later step${others > 1 ? 's' : ''})` : ''}`,
      position: i + 1,
      syncId: s.syncId,
    };
  }

  /** Makes the sequence run terminal and emits sequence_run.completed, in `tx`. */
  private async finish(tx: Tx, sr: RunRowS, steps: StepState[], status: SequenceRunStatus, error: SequenceRunViewT['error'], at: Date): Promise<RunRowS> {
    const [row] = await tx
      .update(sequenceRuns)
      .set({ status, steps, error, finishedAt: at, startedAt: sr.startedAt ?? at, currentStep: null, currentRunId: null, cancelRequestedAt: status === 'cancelled' ? at : sr.cancelRequestedAt })
      .where(eq(sequenceRuns.id, sr.id))
      .returning();
    const [seq] = await tx.select({ id: sequences.id, slug: sequences.slug, name: sequences.name }).from(sequences).where(eq(sequences.id, sr.sequenceId));
    await this.webhooks.emit(
      tx,
      'sequence_run.completed',
      { sequenceRun: sequenceRunView(row), sequence: seq ?? { id: sr.sequenceId }, sequenceRunPath: `/v1/sequence-runs/${row.id}` },
      { workspaceId: row.workspaceId, syncIds: [...new Set(steps.map((s) => s.syncId))] },
      at,
    );
    await publishSequenceRun(tx, row);
    return row;
  }
}

/** The sequence run's advance job, in the caller's transaction (one pending per sequence run). */
export async function enqueueAdvance(tx: Tx, sequenceRunId: string): Promise<void> {
  await tx.execute(
    sql`select graphile_worker.add_job('backhaul_sequence_advance', json_build_object('sequenceRunId', ${sequenceRunId}::text), job_key => ${`sequence-advance:${sequenceRunId}`}::text, max_attempts => 25)`,
  );
}

export async function publishSequenceRun(tx: Tx, r: { id: string; sequenceId: string; workspaceId: string; status: string }): Promise<void> {
  const payload = JSON.stringify({ sequenceRunId: r.id, sequenceId: r.sequenceId, workspaceId: r.workspaceId, status: r.status });
  await tx.execute(sql`select pg_notify(${SEQUENCE_RUN_CHANNEL}, ${payload})`);
}
