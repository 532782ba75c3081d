import type { Logger } from 'pino';
import type postgres from 'postgres';
import type { Sql } from '../db/client.ts';
import { copyTextLine, type FingerprintIndex } from './fingerprint-index.ts';
import { STAGING_SCHEMA, stagingNames } from './staging.ts';

// The in-memory comparison's table (fingerprint-index.ts), kept by the worker from one run of a
// sync to the next (issue 17). Loading a million snapshot pairs costs the control database a
// COPY and the worker ~0.6 s of hashing, on the critical path of every incremental run: most of
// an unchanged run. A run that ends (succeeded or partially) hands its table back with the
// primary keys whose records it may have written; the table drops those keys' records and reads
// their current ones (a few, for a run that changed a few rows), in the background. The next
// run of the sync on this worker takes it if nothing else wrote the snapshot meanwhile.
//
// Who writes a sync's snapshot: its runs (the fingerprint refresh while planning, checkpoints),
// one at a time (a sync's runs share one job queue), and a re-point (which bumps the sync's
// snapshot_version). A run writes only once claimed, and a claim increments its `attempts`. So
// the token `snapshot_version : sum of attempts of the sync's other runs` changes whenever a
// writer other than the run holding the table could have written: a new run claimed anywhere,
// a run taken over, a re-point. A run of the sync deleted by retention changes it too (the table
// is then reloaded: wasted, not wrong). The run holding the table checks the token when it takes
// the table and again when it hands it back (then it must not have moved: no one else wrote
// while it ran); the token kept with the table is the one the next run will compute.
//
// What the table answers if it were stale: a changed row taken as unchanged (not re-sent until
// the row changes again), or a record left out of the unmatched list (not deleted). The token
// makes that impossible short of a bug; the property tests compare a kept table with one loaded
// afresh after every run of random model changes.

/** A table and what makes it current: `token` (kept) or the refresh still to apply (`stale`). */
interface Entry {
  index: FingerprintIndex;
  /** snapshotToken() that the next run must compute for the table to be current. */
  token?: string;
  /** The run that handed the table back, its token at the start, and the keys to re-read. */
  stale?: { runId: string; token: string; keys: string[] };
}

/** A table with more removed records than this share is not kept (the next run loads a compact one). */
const MAX_GARBAGE = 0.25;

export class FingerprintCache {
  readonly #budget: number;
  /** Kept tables by sync, least recently kept first. */
  readonly #entries = new Map<string, Entry>();
  /** Refreshes under way by sync (a take waits for the sync's). */
  readonly #pending = new Map<string, Promise<void>>();

  /** `budgetBytes`: memory the kept tables may hold together (0: nothing is kept). */
  constructor(budgetBytes: number) {
    this.#budget = budgetBytes;
  }

  /** Tables kept, and their bytes (metrics, tests). */
  get stats(): { syncs: number; bytes: number } {
    let bytes = 0;
    for (const e of this.#entries.values()) bytes += e.index.bytes;
    return { syncs: this.#entries.size, bytes };
  }

  /**
   * The sync's table for run `runId` (`lease`: its runs.attempts), reset for a new scan, when this
   * worker kept one and no one but the run that handed it back wrote the snapshot since; else
   * undefined. The table leaves the cache: the run owns it until it hands it back (keep), with
   * the token returned here.
   */
  async take(sql: Sql, syncId: string, runId: string, lease: number): Promise<{ index: FingerprintIndex | undefined; token: string }> {
    await this.#pending.get(syncId);
    const entry = this.#entries.get(syncId);
    this.#entries.delete(syncId);
    const token = await snapshotToken(sql, syncId, [runId]);
    // A run executed before (lease > 1) may have written the snapshot under an earlier lease.
    if (!entry || lease !== 1) return { index: undefined, token };
    if (entry.token !== undefined) {
      if (entry.token !== token) return { index: undefined, token };
    } else {
      // The background refresh found another run claimed meanwhile: this one, possibly (runs
      // back to back). Then no one else wrote: the refresh is applied now.
      const s = entry.stale!;
      const ok = await sql.begin('isolation level repeatable read read only', async (tx) =>
        (await snapshotToken(tx, syncId, [s.runId, runId])) === s.token ? applyRefresh(tx, syncId, entry.index, s.keys) : false,
      );
      if (!ok) return { index: undefined, token };
    }
    entry.index.reset();
    return { index: entry.index, token };
  }

  /**
   * Hands back the table run `runId` compared with (the snapshot as it began; `token` from take)
   * once the run has ended, with every primary key whose records the run may have written
   * (`keys`: its staged rows, its plan, the records its scan left unmatched). The table is
   * brought up to date in the background (or by the next run, when one was claimed meanwhile)
   * and kept if it fits the budget; a failure is logged and the table dropped.
   */
  keep(sql: Sql, k: { syncId: string; runId: string; token: string; index: FingerprintIndex; keys: string[] }, log: Logger): void {
    if (this.#budget <= 0 || k.keys.length > maxKeys(k.index)) return;
    const p: Promise<void> = sql
      .begin('isolation level repeatable read read only', async (tx) => {
        if ((await snapshotToken(tx, k.syncId, [k.runId])) !== k.token) return { index: k.index, stale: { runId: k.runId, token: k.token, keys: k.keys } };
        if (!(await applyRefresh(tx, k.syncId, k.index, k.keys))) return undefined;
        // The token the next run computes: this run's attempts counted in.
        return { index: k.index, token: await snapshotToken(tx, k.syncId, []) };
      })
      .then(
        (entry) => {
          if (entry) this.#put(k.syncId, entry);
        },
        (e: unknown) => log.warn({ err: e }, 'fingerprint table not kept (the next run loads it)'),
      )
      .finally(() => {
        if (this.#pending.get(k.syncId) === p) this.#pending.delete(k.syncId);
      });
    this.#pending.set(k.syncId, p);
  }

  /** Drops the sync's table (a run that read every row: the next incremental run loads it). */
  forget(syncId: string): void {
    this.#entries.delete(syncId);
  }

  /** The sync's kept table when it is up to date (tests: compared with a fresh load). */
  peek(syncId: string): FingerprintIndex | undefined {
    const e = this.#entries.get(syncId);
    return e?.token !== undefined ? e.index : undefined;
  }

  /** Waits for the refreshes under way (tests; shutdown need not). */
  async settled(): Promise<void> {
    await Promise.all(this.#pending.values());
  }

  #put(syncId: string, entry: Entry): void {
    this.#entries.delete(syncId);
    if (entry.index.bytes > this.#budget) return;
    this.#entries.set(syncId, entry);
    let total = this.stats.bytes;
    for (const [id, e] of this.#entries) {
      if (total <= this.#budget) break;
      this.#entries.delete(id);
      total -= e.index.bytes;
    }
  }
}

/** Keys above which re-reading them costs about a fresh load: the table is not kept. */
export const maxKeys = (index: FingerprintIndex) => Math.max(10_000, Math.floor(index.records / 10));

/**
 * The primary keys whose snapshot records run `runId` may have written (see keep), or undefined
 * when there are more than `max`: its staged rows (the fingerprint refresh, every write), its
 * plan (deletes: the records' last claimants) and the records its scan left unmatched (a record
 * a write takes over from a row not read in full is one of them). Read before the run's staging
 * tables are dropped.
 */
export async function keysWritten(sql: Sql, runId: string, max: number): Promise<string[] | undefined> {
  const { stg, plan, unmatched } = stagingNames(runId);
  const t = (name: string) => sql`${sql(STAGING_SCHEMA)}.${sql(name)}`;
  const rows = await sql<{ pk: string }[]>`
    select pk from ${t(stg)} union select pk from ${t(plan)} union select pk from ${t(unmatched)} limit ${max + 1}`;
  return rows.length > max ? undefined : rows.map((r) => r.pk);
}

/**
 * `snapshot_version:sum of attempts` of the sync's runs other than `except` (see the header);
 * 'gone' for a deleted sync. One index range over the sync's runs.
 */
export async function snapshotToken(sql: Sql | postgres.TransactionSql, syncId: string, except: string[]): Promise<string> {
  const [r] = await sql<{ t: string }[]>`
    select s.snapshot_version || ':' || coalesce((select sum(r.attempts) from runs r where r.sync_id = s.id and r.id <> all(${except}::text[])), 0) as t
    from syncs s where s.id = ${syncId}`;
  return r?.t ?? 'gone';
}

/**
 * Replaces the table's records of `keys` by the snapshot's (in the caller's transaction, which
 * checked the token) and sets its record count. False when the table would pass its limit or hold
 * too much garbage: it is then not kept.
 */
async function applyRefresh(tx: postgres.TransactionSql, syncId: string, index: FingerprintIndex, keys: string[]): Promise<boolean> {
  const [{ n }] = await tx<{ n: number }[]>`select count(*)::int as n from sync_snapshots where sync_id = ${syncId}`;
  const rows = keys.length
    ? await tx<{ pk: string; fp: string | null }[]>`
        select primary_key as pk, source_fp as fp from sync_snapshots where sync_id = ${syncId} and primary_key = any(${keys}::text[])`
    : [];
  for (const pk of keys) index.removeKey(pk);
  index.records = n - rows.length;
  for (const r of rows) {
    const line = copyTextLine(r.pk, r.fp);
    if (!index.addLine(line, 0, line.length)) return false;
  }
  return index.garbage <= MAX_GARBAGE;
}
