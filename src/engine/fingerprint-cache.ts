import type { Logger } from 'pino';
import type postgres from 'postgres';
import type { Sql } from '../db/client.ts';
import { resumeAfterCopy } from '../lib/copy-out.ts';
import { copyTextLine, FingerprintIndex, LineSplitter } from './fingerprint-index.ts';
import { assertStagingIntact, STAGING_SCHEMA, stagingNames } from './staging.ts';

// The in-memory comparison's table (fingerprint-index.ts), kept by the worker from one run of a
// sync to the next (issue 17). Loading a million snapshot pairs costs the control database a
// COPY and the worker ~0.6 s of hashing, on the critical path of every incremental run: most of
// an unchanged run. A run that ends (succeeded or partially) hands its table back with the
// primary keys whose records it may have written; the table drops those keys' records and reads
// their current ones (a few, for a run that changed a few rows), in the background. The next run
// of the sync on this worker takes the table if nothing else wrote the snapshot meanwhile. A run
// that read every row (a first run, a full resync, a changed mapping) used no table and keeps
// none: loading one after it, in the background, was measured (the next 1%-changed run of a
// million rows took 2.8 × a bare COPY instead of 4–5 ×) but put 55 MB on top of the 215 MB a
// worker still holds after a full sync of a million rows (270 MB, past the 256 MB it is held to);
// the first incremental run loads it instead.
//
// Who writes a sync's snapshot: its runs (the fingerprint refresh while planning, checkpoints),
// one at a time (a sync's runs share one job queue), each only once claimed, and a re-point
// (which bumps the sync's snapshot_version). Every claim draws runs.claim_seq from one increasing
// sequence. A table is kept with the snapshot version and the claim of the run after which it is
// current (the run that handed it back). A run may take it when it is the first execution of the
// run (an earlier one may have written), the version is the same, and no run of the sync but
// itself holds a later claim: then no one wrote since. Retention deleting that run only makes the
// table reload.
//
// What the table answers if it were stale: a changed row taken as unchanged (not re-sent until
// the row changes again), or a record left out of the unmatched list (not deleted). The stamp
// makes that impossible short of a bug; the property tests compare a kept table with one loaded
// afresh after every run of random model changes.

/** A table, and the snapshot version and run claim after which it is current. */
interface Entry {
  index: FingerprintIndex;
  snapshotVersion: number;
  claimSeq: number;
}

/** What a run's claim and the sync's snapshot version were (the stamp a table is kept with). */
export interface TableStamp {
  snapshotVersion: number;
  claimSeq: number;
}

/** How long a run waits for the refresh of its sync's table before loading the snapshot itself (ms). */
const REFRESH_WAIT_MS = 10_000;

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
   * The sync's table for `run` (its claim: `lease` = runs.attempts), reset for a new scan, when
   * this worker kept one and no one wrote the snapshot since (see the header); else undefined.
   * The table leaves the cache: the run owns it until it hands it back (keep). Also returns the
   * sync's snapshot version now, which the run hands back with it.
   */
  async take(sql: Sql, syncId: string, run: { id: string; lease: number }): Promise<{ index: FingerprintIndex | undefined; snapshotVersion: number }> {
    // A refresh still under way is waited for, within a bound: a run never waits on the cache for
    // longer than a load would take (a refresh that ends later keeps a table no later run takes
    // unless nothing was written since).
    const pending = this.#pending.get(syncId);
    if (pending) {
      let timer: NodeJS.Timeout | undefined;
      const waited = await Promise.race([pending.then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), REFRESH_WAIT_MS)))]);
      clearTimeout(timer);
      if (!waited) return { index: undefined, snapshotVersion: await this.#version(sql, syncId) };
    }
    const entry = this.#entries.get(syncId);
    this.#entries.delete(syncId);
    const [now] = await sql<{ v: number; c: string | null }[]>`
      select s.snapshot_version as v, (select max(r.claim_seq) from runs r where r.sync_id = s.id and r.id <> ${run.id}) as c
      from syncs s where s.id = ${syncId}`;
    const snapshotVersion = now?.v ?? -1;
    const current = entry && now && run.lease === 1 && entry.snapshotVersion === now.v && Number(now.c ?? 0) === entry.claimSeq;
    if (!current) return { index: undefined, snapshotVersion };
    entry.index.reset();
    return { index: entry.index, snapshotVersion };
  }

  async #version(sql: Sql, syncId: string): Promise<number> {
    const [s] = await sql<{ v: number }[]>`select snapshot_version as v from syncs where id = ${syncId}`;
    return s?.v ?? -1;
  }

  /**
   * Hands back the table run `stamp.claimSeq` compared with (the snapshot as it began, at
   * `stamp.snapshotVersion`) once the run has ended, with every primary key whose records the run
   * may have written (`keys`: its staged rows, its plan, the records its scan left unmatched).
   * The table is brought up to date in the background and kept if it fits the budget; a failure
   * is logged and the table dropped.
   */
  keep(sql: Sql, k: { syncId: string; stamp: TableStamp; index: FingerprintIndex; keys: string[] }, log: Logger): void {
    if (this.#budget <= 0 || k.keys.length > maxKeys(k.index)) return;
    this.#track(
      k.syncId,
      sql.begin('isolation level repeatable read read only', async (tx) => ((await applyRefresh(tx, k.syncId, k.index, k.keys)) ? { index: k.index, ...k.stamp } : undefined)),
      log,
    );
  }

  /** Drops the sync's table (a run that read every row: the next incremental run loads it). */
  forget(syncId: string): void {
    this.#entries.delete(syncId);
  }

  /** The sync's kept table (tests: compared with a fresh load). */
  peek(syncId: string): FingerprintIndex | undefined {
    return this.#entries.get(syncId)?.index;
  }

  /** Waits for the refreshes under way (tests; shutdown need not). */
  async settled(): Promise<void> {
    await Promise.all(this.#pending.values());
  }

  /** Keeps what `work` gives for the sync once it is done (a take waits for it); a failure is logged. */
  #track(syncId: string, work: Promise<Entry | undefined>, log: Logger): void {
    const p: Promise<void> = work
      .then(
        (entry) => {
          if (entry) this.#put(syncId, entry);
        },
        (e: unknown) => log.warn({ err: e }, 'fingerprint table not kept (the next run loads it)'),
      )
      .finally(() => {
        if (this.#pending.get(syncId) === p) this.#pending.delete(syncId);
      });
    this.#pending.set(syncId, p);
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

/**
 * The sync's snapshot pairs (primary key, fingerprint) loaded into a new table; undefined when
 * there are more than `max` records (the comparison stays in SQL). `expected`: a first size (to
 * grow less: doubling costs ~2 inserts per pair and holds both tables for a moment); `prefix`:
 * the evaluation version's (kept once, not per line). Pairs of another evaluation version match
 * no scanned line (those carry this version's prefix), so they are not filtered out (a prefix test
 * in SQL cost more than it saved); records without a fingerprint are read to be counted. Read
 * with COPY on `conn` (a reserved connection or a transaction), at most `max` + 1 rows, always
 * to its end: a COPY stream left unread stalls its connection, so an abort stops the work, not
 * the read (bounded by those rows, about a second per million). A COPY, not a cursor: a
 * cursor's rows cost three times as much to take apart here.
 */
export async function loadTable(
  conn: postgres.ReservedSql | postgres.TransactionSql,
  syncId: string,
  o: { expected: number; max: number; prefix: string },
  signal?: AbortSignal,
): Promise<FingerprintIndex | undefined> {
  const index = new FingerprintIndex(Math.min(o.max, Math.ceil(o.expected * 1.05)), o.max, o.prefix);
  let full = false;
  const splitter = new LineSplitter((buf, start, end) => {
    if (!full && !index.addLine(buf, start, end)) full = true;
  });
  // COPY takes no parameters: the sync's id as a quoted literal.
  const id = `'${syncId.replace(/'/g, "''")}'`;
  const stream = await conn.unsafe(`copy (select primary_key, source_fp from sync_snapshots where sync_id = ${id} limit ${Math.floor(o.max) + 1}) to stdout`).readable();
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    if (!full && !signal?.aborted) splitter.push(chunk);
  }
  // The connection goes back to the pool: its socket must flow (lib/copy-out.ts).
  resumeAfterCopy(stream);
  if (signal?.aborted) throw signal.reason;
  if (full) return undefined;
  const rest = splitter.end();
  if (rest) throw new Error(`snapshot read: ${rest}`);
  return index;
}

/** Keys above which re-reading them costs about a fresh load: the table is not kept. */
export const maxKeys = (index: FingerprintIndex) => Math.max(10_000, Math.floor(index.records / 10));

/**
 * The primary keys whose snapshot records run `runId` may have written (see keep), or undefined
 * when there are more than `max`: its staged rows (the fingerprint refresh, every write), its
 * plan (deletes: the records' last claimants) and the records its scan left unmatched (a record
 * a write takes over from a row not read in full is one of them). Read before the run's staging
 * tables are dropped; throws StagingLostError when a crash of PostgreSQL emptied them.
 */
export async function keysWritten(sql: Sql, runId: string, max: number): Promise<string[] | undefined> {
  const { stg, plan, unmatched } = stagingNames(runId);
  return sql.begin(async (tx) => {
    // Emptied by a crash of PostgreSQL, they would name too few keys (StagingLostError: not kept).
    await assertStagingIntact(tx, runId);
    const t = (name: string) => tx`${tx(STAGING_SCHEMA)}.${tx(name)}`;
    const rows = await tx<{ pk: string }[]>`
      select pk from ${t(stg)} union select pk from ${t(plan)} union select pk from ${t(unmatched)} limit ${max + 1}`;
    return rows.length > max ? undefined : rows.map((r) => r.pk);
  });
}

/**
 * Replaces the table's records of `keys` by the snapshot's (read in the caller's transaction)
 * and sets its record count. False when the table would pass its limit or hold
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
