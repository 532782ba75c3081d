import type { Sql } from '../db/client.ts';

// Job affinity for kept comparison tables (issue 17). A worker keeps a sync's comparison table
// after an incremental run (fingerprint-cache.ts) and the sync's next run uses it only if it
// runs on that worker: with several workers, a run that lands elsewhere loads the snapshot again
// (measured at a million rows: the 1%-changed run 2.8–4 × a bare COPY instead of 1.6–2.2 ×). So
// a sync's run job carries the flag `table:<pool>` of the graphile-worker pool that executed the
// sync's last finished run (domain/runs.ts, where the job is added in the trigger's transaction), and
// every other worker process skips jobs with that flag (graphile-worker's forbiddenFlags) while
// that process is alive (seen within a few heartbeats) and has a run slot free (its heartbeat
// says how many, worker_processes.idle_run_slots). Otherwise anyone takes the job, as before:
// a dead, stopped or busy worker delays a sync's run by a few heartbeats at most, never strands it.
// The flag only chooses who runs the job; whether the table is current is the cache's own check.

/** The flag of a run job meant for the pool that executed the sync's last finished run. */
export const TABLE_FLAG_PREFIX = 'table:';

export interface AffinityOptions {
  /** This process's worker_processes id: its own pools' flags are never forbidden. */
  processId: string;
  /** Least time between two reads of the other processes (ms). */
  refreshMs: number;
  /** A process seen longer ago than this is taken as gone (ms): a few of its heartbeats. */
  freshMs: number;
}

/**
 * The flags this process's run lane skips (graphile-worker's forbiddenFlags): `table:<pool>` for
 * every pool of another process seen within `freshMs` with a run slot free. Answers at once from
 * what it last read (read again in the background at most every `refreshMs`); answers no flag
 * while the control database cannot be read (every job may be taken).
 */
export class AffinityFlags {
  readonly #sql: Sql;
  readonly #o: AffinityOptions;
  #flags: string[] = [];
  #readAt = -Infinity;
  #reading: Promise<void> | undefined;

  constructor(sql: Sql, o: AffinityOptions) {
    this.#sql = sql;
    this.#o = o;
  }

  /** For graphile-worker's forbiddenFlags: never throws, never waits. */
  readonly forbidden = (): string[] => {
    if (!this.#reading && Date.now() - this.#readAt >= this.#o.refreshMs) {
      this.#reading = this.refresh().finally(() => (this.#reading = undefined));
    }
    return this.#flags;
  };

  /** Reads the other processes now (tests; `forbidden` calls it). */
  async refresh(): Promise<void> {
    this.#readAt = Date.now();
    try {
      const rows = await this.#sql<{ pool: string }[]>`
        select unnest(pool_ids) as pool from worker_processes
        where id <> ${this.#o.processId} and idle_run_slots > 0 and last_seen_at > now() - ${`${this.#o.freshMs} milliseconds`}::interval`;
      this.#flags = rows.map((r) => `${TABLE_FLAG_PREFIX}${r.pool}`);
    } catch {
      this.#flags = [];
    }
  }
}
