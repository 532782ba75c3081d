import { and, eq, sql as dsql } from 'drizzle-orm';
import type { Database } from '../db/client.ts';
import { runs } from '../db/schema.ts';
import { publishRun, type RunRow } from '../domain/runs.ts';
import { ConnectorError } from '../errors.ts';
import { LeaseLostError } from './checkpoint.ts';
import type { RunHooks } from './executor.ts';
import { dropRunTables } from './staging.ts';
import { TERMINAL, type Phase, type PhaseTiming, type RunError, type RunCounts, type RunStatus } from './status.ts';

// The run row as one execution sees it: claimed with a lease (runs.attempts, incremented
// atomically), and every later write fenced by it, so an execution that lost the run to another
// worker changes nothing. Each write is published (GraphQL subscriptions, other instances).

export class RunState {
  run: RunRow;
  readonly lease: number;
  readonly firstStart: boolean;
  private readonly database: Database;
  private readonly hooks: RunHooks;

  private constructor(database: Database, run: RunRow, firstStart: boolean, hooks: RunHooks) {
    this.database = database;
    this.run = run;
    this.lease = run.attempts;
    this.firstStart = firstStart;
    this.hooks = hooks;
  }

  /**
   * Takes the run for this execution: null when it is gone or terminal (nothing to do), or was
   * cancelled before it started (it is finished as cancelled here).
   */
  static async claim(database: Database, runId: string, workerId: string, hooks: RunHooks): Promise<RunState | null> {
    const [loaded] = await database.db.select().from(runs).where(eq(runs.id, runId));
    if (!loaded || TERMINAL.has(loaded.status as RunStatus)) return null;
    const [row] = await database.db
      .update(runs)
      .set({ status: 'running', startedAt: loaded.startedAt ?? new Date(), workerId, heartbeatAt: new Date(), attempts: dsql`${runs.attempts} + 1` })
      .where(eq(runs.id, runId))
      .returning();
    if (!row) return null;
    await publishRun(database.db, row);
    const state = new RunState(database, row, !loaded.startedAt, hooks);
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
    await publishRun(this.database.db, row);
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

  /** Makes the run terminal, drops its per-run tables and calls the runFinished hook. */
  async finish(status: RunStatus, error: RunError | null, counts?: RunCounts): Promise<void> {
    const now = new Date().toISOString();
    const phases = (this.run.phases as PhaseTiming[]).map((p) => (p.finishedAt === null ? { ...p, finishedAt: now } : p));
    let finished: RunRow;
    try {
      finished = await this.update({ status, error, finishedAt: new Date(now), phases, ...(counts ? { counts } : {}) });
    } catch (e) {
      if (e instanceof LeaseLostError || e instanceof ConnectorError) return; // taken over, or deleted: not ours to finish
      throw e;
    }
    await dropRunTables(this.database.sql, this.run.id).catch(() => {});
    try {
      await this.hooks.runFinished?.(finished);
    } catch {
      // a failing hook never changes the run's outcome (the hook logs its own errors)
    }
  }
}
