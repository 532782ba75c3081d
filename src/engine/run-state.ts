import { and, eq, sql as dsql } from 'drizzle-orm';
import type { Database } from '../db/client.ts';
import { runInflight, runs } from '../db/schema.ts';
import { enqueueRunFinished, publishRun, type RunRow } from '../domain/runs.ts';
import { ConnectorError } from '../errors.ts';
import { LeaseLostError } from './checkpoint.ts';
import type { RunHooks } from './executor.ts';
import { dropRunTables } from './staging.ts';
import { TERMINAL, type Phase, type PhaseTiming, type RunError, type RunCounts, type RunStatus } from './status.ts';

// The run row as one execution sees it: claimed with a lease (runs.attempts, incremented
// atomically), and every later write fenced by it, so an execution that lost the run to another
// worker changes nothing. Writes are published on the run channel (GraphQL runUpdated, run
// waiters, other instances), coalesced: every status and phase change and the terminal state are
// published; a write that changes only counters or bookkeeping (counts, plan sample, timestamps) is
// published only when the last publication is at least COUNTS_NOTIFY_MS old (a notification is a
// round trip and wakes every listener in every instance; a subscriber reads the run as it is, so
// the next publication carries the counters the skipped ones would have).

/** Least time between two publications of a run that change neither its status nor its phase (ms). */
export const COUNTS_NOTIFY_MS = 1000;

export class RunState {
  run: RunRow;
  readonly lease: number;
  readonly firstStart: boolean;
  private readonly database: Database;
  private readonly hooks: RunHooks;
  /** What was last published of this run (status, phase) and when (ms since epoch). */
  private published: { status: string; phase: string | null; at: number };
  private readonly countsNotifyMs: number;

  private constructor(database: Database, run: RunRow, firstStart: boolean, hooks: RunHooks, countsNotifyMs: number) {
    this.database = database;
    this.run = run;
    this.lease = run.attempts;
    this.firstStart = firstStart;
    this.hooks = hooks;
    this.countsNotifyMs = countsNotifyMs;
    this.published = { status: run.status, phase: run.phase, at: Date.now() };
  }

  /** Whether a write that left the run as `row` is published (see the header). */
  private shouldPublish(row: RunRow, now: number): boolean {
    const last = this.published;
    return row.status !== last.status || row.phase !== last.phase || now - last.at >= this.countsNotifyMs;
  }

  /**
   * Takes the run for this execution: null when it is gone or terminal (nothing to do), or was
   * cancelled before it started (it is finished as cancelled here). `countsNotifyMs`: see
   * COUNTS_NOTIFY_MS.
   */
  static async claim(database: Database, runId: string, workerId: string, hooks: RunHooks, countsNotifyMs = COUNTS_NOTIFY_MS): Promise<RunState | null> {
    const [loaded] = await database.db.select().from(runs).where(eq(runs.id, runId));
    if (!loaded || TERMINAL.has(loaded.status as RunStatus)) return null;
    // FOR UPDATE first: it waits for an earlier execution's batch registration in flight (which
    // holds FOR KEY SHARE, see registerInflight), so either this claim sees that batch or that
    // execution sees it lost the run. A plain UPDATE of a non-key column would not wait for it.
    const [row] = await database.db.transaction(async (tx) => {
      await tx.execute(dsql`select 1 from runs where id = ${runId} for update`);
      return tx
        .update(runs)
        .set({ status: 'running', startedAt: loaded.startedAt ?? new Date(), workerId, heartbeatAt: new Date(), attempts: dsql`${runs.attempts} + 1`, claimSeq: dsql`nextval('run_claim_seq')` })
        .where(eq(runs.id, runId))
        .returning();
    });
    if (!row) return null;
    await publishRun(database.db, row);
    const state = new RunState(database, row, !loaded.startedAt, hooks, countsNotifyMs);
    if (row.cancelRequestedAt) {
      await state.finish('cancelled', { code: 'cancelled', message: 'Cancelled before it started.', retryable: false });
      return null;
    }
    return state;
  }

  /** Updates the run row if this execution still holds it. */
  async update(set: Partial<typeof runs.$inferInsert>): Promise<RunRow> {
    const [row] = await this.database.db
      .update(runs)
      .set(set)
      .where(and(eq(runs.id, this.run.id), eq(runs.attempts, this.lease)))
      .returning();
    if (!row) {
      const [exists] = await this.database.db.select({ id: runs.id }).from(runs).where(eq(runs.id, this.run.id));
      if (!exists) throw new ConnectorError('sync_deleted', 'The sync was deleted during the run.', { classification: 'fatal' });
      throw new LeaseLostError(this.run.id);
    }
    this.run = row;
    const now = Date.now();
    if (this.shouldPublish(row, now)) {
      this.published = { status: row.status, phase: row.phase, at: now };
      await publishRun(this.database.db, row);
    }
    return row;
  }

  async enterPhase(phase: Phase): Promise<void> {
    const now = new Date().toISOString();
    for (const p of this.run.phases as PhaseTiming[]) {
      if (p.finishedAt === null && p.name !== phase) this.hooks.phaseFinished?.(this.run, p.name, Date.parse(now) - Date.parse(p.startedAt));
    }
    const phases = (this.run.phases as PhaseTiming[]).map((p) => (p.finishedAt === null && p.name !== phase ? { ...p, finishedAt: now } : p));
    if (!phases.some((p) => p.name === phase)) phases.push({ name: phase, startedAt: now, finishedAt: null });
    await this.update({ phase, phases });
  }

  /**
   * Makes the run terminal and, in the same transaction, enqueues its outbox job
   * (`backhaul_run_finished`: run.completed webhooks, the trigger's callback, alerts), so that no
   * crash between the two loses them; then drops its per-run tables and calls the runFinished
   * hook (process-local: metrics, the row debugger's buffer).
   */
  async finish(status: RunStatus, error: RunError | null, counts?: RunCounts): Promise<void> {
    killPoint('run-finished:before'); // after the last checkpoint, before the terminal update
    const now = new Date().toISOString();
    const phases = (this.run.phases as PhaseTiming[]).map((p) => (p.finishedAt === null ? { ...p, finishedAt: now } : p));
    const set = { status, error, finishedAt: new Date(now), phases, ...(counts ? { counts } : {}) };
    const finished = await this.database.db.transaction(async (tx) => {
      const [row] = await tx.update(runs).set(set).where(and(eq(runs.id, this.run.id), eq(runs.attempts, this.lease))).returning();
      if (!row) return undefined; // taken over, or deleted: not ours to finish
      await enqueueRunFinished(tx, row.id);
      await publishRun(tx, row);
      // Batches registered as sent are settled: what was not recorded is not retried any more.
      await tx.delete(runInflight).where(eq(runInflight.runId, row.id));
      killPoint('run-finished:uncommitted');
      return row;
    });
    killPoint('run-finished:committed');
    if (!finished) return;
    this.run = finished;
    await dropRunTables(this.database.sql, this.run.id).catch(() => {});
    try {
      await this.hooks.runFinished?.(finished);
    } catch {
      // a failing hook never changes the run's outcome (the hook logs its own errors)
    }
  }
}

/**
 * Fault injection for the reliability suite: when BACKHAUL_KILL_POINT names this point, the
 * process dies here at once (as kill -9 would). Never set outside tests. The points of finishing
 * a run, in order:
 *   run-finished:before               the last batch is checkpointed; the run is not terminal yet
 *   run-finished:uncommitted          inside the terminal transaction (outbox job enqueued), before COMMIT
 *   run-finished:committed            the run is terminal and its outbox job committed
 *   run-finished:emitted-uncommitted  the outbox task emitted run.completed, before its COMMIT
 *   run-finished:emitted              run.completed emitted and marked; alerts not evaluated yet
 *   run-finished:alerts-evaluated     alert rules evaluated (alerts raised), not marked evaluated yet
 *   schedule:fire                     a schedule-lane job (sync or sequence slot) is locked, before its fire
 * With `scope` (e.g. a sync id), `name:scope` names this point for that object only.
 */
export function killPoint(name: string, scope?: string): void {
  if (pointNamed(process.env.BACKHAUL_KILL_POINT, name, scope)) process.kill(process.pid, 'SIGKILL');
}

/**
 * Fault injection: when BACKHAUL_STALL_POINT names this point (as killPoint), wait here until
 * `signal` aborts — a live worker whose task is slow (its process keeps answering). Never set
 * outside tests.
 */
export async function stallPoint(name: string, scope: string | undefined, signal: AbortSignal): Promise<void> {
  if (!pointNamed(process.env.BACKHAUL_STALL_POINT, name, scope) || signal.aborted) return;
  await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
}

function pointNamed(env: string | undefined, name: string, scope?: string): boolean {
  return env === name || (scope !== undefined && env === `${name}:${scope}`);
}
