import type postgres from 'postgres';
import type { Sql } from '../db/client.ts';
import type { SyncModeT } from '../domain/syncs.ts';
import { parsePayload } from '../lib/json.ts';
import type { InvalidRow } from './records.ts';
import { analyzeStaging, assertStagingIntact, dropPlan, STAGING_SCHEMA, stagingNames, tableExists, type StagedDistinct } from './staging.ts';
import type { OpCounts } from './status.ts';

// Diffing: from the staged rows and the sync's snapshot to the plan, in set-based SQL (hashed
// passes, no sorts). The snapshot holds one entry per destination RECORD Backhaul wrote, keyed by
// its match key; a staged row CLAIMS the record of its match key. The rules (DESIGN §3):
//   - two rows with one primary key, or two rows claiming one record, are all invalid (never a
//     silent pick); a row's reason names the other rows;
//   - a claimed record not in the snapshot is written (insert; update mode: update by match key);
//   - a claimed record in the snapshot is updated when its payload changed, when another row
//     claimed it last, or on a full resync (insert mode: only re-inserted on a full resync);
//   - mirror only: a snapshot record that NO staged row claims (valid or not) and whose last
//     claimant is not an invalid row of this run is deleted. A row whose match value moved thus
//     leaves its old record to be deleted in mirror mode and kept in the others. Deletes come last
//     in the plan and are sent only after every write was acknowledged.

/**
 * An incremental run's key scan (query.ts): the evaluation version its fingerprints were compared
 * under and the rows it read, or undefined when the run read every row in full. `table` holds
 * what the diff needs of it: `keys` (compared in SQL: keys_<run>, every scanned key and
 * fingerprint) or `unmatched` (compared in memory: unm_<run>, the snapshot pairs no scanned row
 * showed). The comment naming the version is written once the scan is complete, so a scan cut
 * short reads as none.
 */
export async function incrementalScan(sql: Sql, runId: string): Promise<IncrementalScan | undefined> {
  const { keys, unmatched } = stagingNames(runId);
  const [r] = await sql<{ k: string | null; u: string | null }[]>`
    select obj_description(to_regclass(${`${STAGING_SCHEMA}.${keys}`}), 'pg_class') as k,
           obj_description(to_regclass(${`${STAGING_SCHEMA}.${unmatched}`}), 'pg_class') as u`;
  const parse = (d: string | null | undefined) => /^version=([0-9a-z]+) rows=(\d+)$/.exec(d ?? '');
  const u = parse(r?.u);
  if (u) return { version: u[1], rows: Number(u[2]), table: 'unmatched' };
  const k = parse(r?.k);
  return k ? { version: k[1], rows: Number(k[2]), table: 'keys' } : undefined;
}

export interface IncrementalScan {
  version: string;
  rows: number;
  table: 'keys' | 'unmatched';
}

/**
 * SQL: snapshot record `n` is claimed by a row the key scan showed with the record's key and
 * fingerprint (an unchanged row, not read in full).
 */
function claimedByScan(sql: Sql, runId: string, inc: IncrementalScan) {
  const { keys, unmatched } = stagingNames(runId);
  return inc.table === 'keys'
    ? sql`exists (select 1 from ${sql(STAGING_SCHEMA)}.${sql(keys)} kk where kk.pk = n.primary_key and kk.fp = n.source_fp)`
    : sql`(n.source_fp is not null and not exists (select 1 from ${sql(STAGING_SCHEMA)}.${sql(unmatched)} u where u.pk = n.primary_key and u.fp = n.source_fp))`;
}

/**
 * Marks duplicated primary keys and rows claiming one destination record as invalid. In an
 * incremental run (`syncId` given and a complete key scan) the staged rows are only those read in
 * full; a row that was not (unchanged since the snapshot) still claims its record: the record
 * whose last claimant it is and whose fingerprint its key scan matched. A staged row claiming
 * that record makes both invalid, as when both were read: the unchanged row is staged as a claim.
 */
export interface MarkOptions {
  /** rec_<run> holds the records of every valid staged row's match key, copied by this execution's read (StagedRecordsCopy). */
  recordsCopied?: boolean;
  /** What this execution's staging writer proved of every staged row: the aggregates that would find no duplicate are skipped. */
  distinct?: StagedDistinct;
}

export async function markDuplicates(sql: Sql, runId: string, syncId?: string, lookups?: Lookups, opts: MarkOptions = {}): Promise<InvalidRow[]> {
  const { stg, keys, unmatched, records: rec } = stagingNames(runId);
  const t = sql`${sql(STAGING_SCHEMA)}.${sql(stg)}`;
  const inc = syncId ? await incrementalScan(sql, runId) : undefined;
  // Statistics for the planner (a fresh table has none): hash joins and aggregates, no sorts.
  // Not needed when the writer proved there is nothing to aggregate (buildPlan analyzes if it joins).
  const proved = opts.distinct?.primaryKeys === true && opts.distinct.matchKeys;
  if (inc || !proved) await analyzeStaged(sql, stg);
  const small = inc !== undefined && (opts.recordsCopied || (await smallStaged(sql, stg, inc.rows, lookups)));
  // The staged rows' records, copied once for this pass and the plan (never one of an earlier
  // execution: this execution's read may have copied them while it staged the rows).
  if (!(small && opts.recordsCopied)) {
    await sql`drop table if exists ${sql(STAGING_SCHEMA)}.${sql(rec)}`;
    if (small) await copyStagedRecords(sql, runId, syncId!);
  }
  return sql.begin(async (tx) => {
    await assertStagingIntact(tx, runId);
    await tx`set local work_mem = '64MB'`;
    const invalid: InvalidRow[] = [];
    // One hashed pass finds the duplicated keys (usually none); only those rows are rewritten.
    const dups = opts.distinct?.primaryKeys ? [] : await tx<{ pk: string }[]>`select pk from ${t} group by pk having count(*) > 1`;
    if (dups.length) {
      const pks = dups.map((d) => d.pk);
      await tx`update ${t} set state = 'd' where pk = any(${pks}::text[]) and state <> 'd'`;
      for (const pk of pks) invalid.push({ pk, code: 'duplicate_primary_key', message: `Primary key "${pk}" appears more than once in the model's result; none of its rows was sent.` });
    }
    // Valid rows claiming one destination record: each is invalid, naming the others.
    // Incremental: records a staged row claims whose last claimant was not read in full (usually
    // none: found by the snapshot's key), then which of those claimants are present and unchanged
    // (one pass over the key scan, only when there are any).
    let unread: { pk: string; mkey: string; match: string }[] = [];
    if (inc) {
      // Few staged rows: their records were copied to rec_<run> (copyStagedRecords).
      const records = small
        ? sql`${sql(STAGING_SCHEMA)}.${sql(rec)} n where true`
        : sql`(select distinct mkey from ${t} where state = 'v') st join sync_snapshots n on n.sync_id = ${syncId!} and n.match_key = st.mkey where true`;
      const cands = await tx<{ pk: string; mkey: string; match: string; fp: string | null }[]>`
        select n.primary_key as pk, n.match_key as mkey, n.match_value::text as match, n.source_fp as fp
        from ${records}
          and not exists (select 1 from ${t} x where x.pk = n.primary_key) and n.source_fp like ${`${inc.version}:%`}`;
      if (cands.length) {
        // One pass over the scan's table by key (keys_<run>: the pairs shown; unm_<run>: those not).
        const shown = inc.table === 'keys';
        const listed = await tx<{ pk: string; fp: string }[]>`
          select pk, fp from ${sql(STAGING_SCHEMA)}.${sql(shown ? keys : unmatched)} where pk = any(${cands.map((c) => c.pk)}::text[])`;
        const has = new Set(listed.map((r) => `${r.pk}\u0000${r.fp}`));
        unread = cands.filter((c) => has.has(`${c.pk}\u0000${c.fp}`) === shown);
      }
    }
    const shared = unread.length
      ? await tx<{ mkey: string; match: string; pks: string[]; unread: string[] | null }[]>`
          with claims as (
            select pk, mkey, match, false as unread from ${t} where state = 'v'
            union all
            select u.pk, u.mkey, u.match, true from unnest(${unread.map((u) => u.pk)}::text[], ${unread.map((u) => u.mkey)}::text[], ${unread.map((u) => u.match)}::text[]) as u(pk, mkey, match))
          select mkey, min(match) as match, array_agg(pk order by pk) as pks, array_agg(pk) filter (where unread) as unread
          from claims group by mkey having count(*) > 1`
      : opts.distinct?.matchKeys
        ? []
        : await tx<{ mkey: string; match: string; pks: string[]; unread: string[] | null }[]>`
          with shared as (select mkey from ${t} where state = 'v' group by mkey having count(*) > 1)
          select t.mkey, min(t.match) as match, array_agg(t.pk order by t.pk) as pks, null::text[] as unread
          from ${t} t join shared using (mkey) where t.state = 'v' group by t.mkey`;
    if (shared.length) {
      await tx`update ${t} set state = 'm' where state = 'v' and mkey = any(${shared.map((s) => s.mkey)}::text[])`;
      for (const s of shared) {
        // Unchanged rows become staged claims too: invalid, and their record is not deleted.
        if (s.unread?.length) await tx`insert into ${t} (pk, state, match, mkey) select u, 'm', ${s.match}, ${s.mkey} from unnest(${s.unread}::text[]) as u`;
      }
      for (const s of shared) {
        for (const pk of s.pks) {
          const others = s.pks.filter((o) => o !== pk);
          const named = others.slice(0, 5).map((o) => `"${o}"`).join(', ') + (others.length > 5 ? ` and ${others.length - 5} more` : '');
          invalid.push({
            pk,
            code: 'duplicate_match_value',
            message: `Row "${pk}" and row${others.length > 1 ? 's' : ''} ${named} claim the same destination record (match value ${s.match.slice(0, 200)}); none of them was sent.`,
          });
        }
      }
    }
    return invalid;
  });
}

/**
 * Statistics for the planner on the staged columns queries filter, join or group by (a fresh
 * table has none; the payload's would cost the most and serve nothing: about 40% of the time).
 */
async function analyzeStaged(sql: Sql | postgres.TransactionSql, stg: string): Promise<void> {
  await analyzeStaging(sql, stg, ['pk', 'hash', 'state', 'mkey', 'seq']);
}

/** Whether stg_<run> has statistics (analyzeStaged ran since it was filled). */
async function analyzed(sql: Sql | postgres.TransactionSql, stg: string): Promise<boolean> {
  const [r] = await sql<{ ok: boolean }[]>`select exists (select 1 from pg_stats where schemaname = ${STAGING_SCHEMA} and tablename = ${stg} and attname = 'seq') as ok`;
  return r.ok;
}

/**
 * Copies into rec_<run> the snapshot records of the match keys stg_<run>'s valid rows claim
 * (all columns but `updated_at`), in one pass of lookups by the snapshot's key: marking
 * duplicates and the plan then join this small table instead of looking each record up again
 * (one lookup costs 15–20 µs at a million records, measured; three passes took ~0.6 s for 11k
 * rows). For few staged rows only (smallStaged). Valid until the run writes its snapshot: built
 * by markDuplicates, used by the plan that follows it (whose fingerprint refresh comes after its
 * last read of it), rebuilt by every execution.
 */
async function copyStagedRecords(sql: Sql, runId: string, syncId: string): Promise<void> {
  const { stg, records } = stagingNames(runId);
  const r = sql`${sql(STAGING_SCHEMA)}.${sql(records)}`;
  await sql`
    create unlogged table ${r} as
    ${recordsOf(sql, syncId, sql`select distinct mkey from ${sql(STAGING_SCHEMA)}.${sql(stg)} where state = 'v' order by mkey`)}`;
  await analyzeStaging(sql, records);
}

/**
 * The records of the match keys `mkeys` (a query of one column `mkey`, each once), with the
 * columns of rec_<run>. A lateral subquery the planner cannot flatten (OFFSET 0): one lookup per
 * key, whatever the statistics say (a sync's first big checkpoint leaves them stale for a while;
 * a planner told "few records" would otherwise pick a nested loop over all of them). Given in
 * the key index's order, its pages are read once each, in order.
 */
function recordsOf(sql: Sql, syncId: string, mkeys: ReturnType<Sql>) {
  return sql`
    select n.match_key, n.primary_key, n.hash, n.match_value, n.record_id, n.source_fp
    from (${mkeys}) st
    cross join lateral (select * from sync_snapshots n where n.sync_id = ${syncId} and n.match_key = st.mkey offset 0) n`;
}

/**
 * rec_<run> built while an incremental read stages its rows (query.ts), instead of by
 * markDuplicates after it: `add` the match keys of each batch of valid staged rows as they are
 * staged (a key is looked up once), then `end`. Their lookups run one batch at a time on a
 * connection of the pool, beside the read. Only for few staged rows (fewStaged); markDuplicates
 * of the same execution is then told the table is complete (MarkOptions.recordsCopied).
 */
export class StagedRecordsCopy {
  readonly #sql: Sql;
  readonly #syncId: string;
  readonly #records: string;
  readonly #seen = new Set<string>();
  #chain: Promise<void>;

  constructor(sql: Sql, runId: string, syncId: string) {
    this.#sql = sql;
    this.#syncId = syncId;
    this.#records = stagingNames(runId).records;
    const table = this.#table();
    this.#chain = (async () => {
      await sql`drop table if exists ${table}`;
      await sql`create unlogged table ${table} as ${recordsOf(sql, syncId, sql`select null::text as mkey where false`)}`;
    })();
    this.#chain.catch(() => {}); // awaited by end(); a failure must not go unhandled meanwhile
  }

  /** Looks up the records of these match keys (those not added before), after the lookups already asked for. */
  add(mkeys: Iterable<string>): void {
    const fresh: string[] = [];
    for (const k of mkeys) {
      if (this.#seen.has(k)) continue;
      this.#seen.add(k);
      fresh.push(k);
    }
    if (!fresh.length) return;
    fresh.sort();
    const sql = this.#sql;
    this.#chain = this.#chain.then(async () => {
      await sql`insert into ${this.#table()} ${recordsOf(sql, this.#syncId, sql`select unnest(${fresh}::text[]) as mkey`)}`;
    });
    this.#chain.catch(() => {});
  }

  /** Waits for every lookup; rejects with the first failure. */
  async end(): Promise<void> {
    await this.#chain;
    await analyzeStaging(this.#sql, this.#records);
  }

  #table() {
    return this.#sql`${this.#sql(STAGING_SCHEMA)}.${this.#sql(this.#records)}`;
  }
}

/**
 * Whether stg_<run> is small enough for index lookups into the snapshot: an incremental run
 * (`scanned` = the rows its key scan read, about the snapshot's size) whose staged rows
 * (PostgreSQL's estimate after ANALYZE) are at most 1/20 of them, or at most SMALL_STAGED_FLOOR.
 * Each staged row then looks its record up by the snapshot's primary key (sync_id, match_key)
 * instead of a hash join that reads every snapshot record of the sync. Measured: a lookup costs
 * ~10 µs, a hash join ~0.5 µs per record (half a second at a million records), so lookups win
 * below 1/20; an absolute threshold made a 1% change of 10M rows hash-join 10M records thrice.
 */
async function smallStaged(sql: Sql, table: string, scanned: number | undefined, lookups?: Lookups): Promise<boolean> {
  if (lookups) return lookups === 'index';
  const [r] = await sql<{ n: number }[]>`select greatest(reltuples, 0)::float8 as n from pg_class where oid = to_regclass(${`${STAGING_SCHEMA}.${table}`})`;
  return r !== undefined && fewStaged(r.n, scanned);
}
const SMALL_STAGED_FLOOR = 2_000;

/** Whether `staged` rows of an incremental run that scanned `scanned` rows are few enough for lookups by key (see smallStaged). */
export function fewStaged(staged: number, scanned: number | undefined): boolean {
  return staged <= Math.max(SMALL_STAGED_FLOOR, (scanned ?? 0) / 20);
}

/**
 * How staged rows find their snapshot records: 'index' (a lookup per row) or 'hash' (one hash
 * join over the sync's records). Unset: chosen by size (smallStaged). Both give the same plan;
 * the plan harness alternates them to prove it.
 */
export type Lookups = 'index' | 'hash';

export interface PlanOptions {
  syncId: string;
  mode: SyncModeT;
  fullResync: boolean;
  /** A dry run leaves the snapshot untouched (no fingerprint refresh). */
  dryRun?: boolean;
  /** The destination field deletes name the record by (their payload is just that field). */
  matchField: string;
  baseBatch?: number;
  /** Forces how staged rows find their records (tests); unset: by size. */
  lookups?: Lookups;
}

export async function buildPlan(sql: Sql, runId: string, opts: PlanOptions): Promise<{ planned: OpCounts; total: number }> {
  const { stg, plan, records } = stagingNames(runId);
  const s = sql`${sql(STAGING_SCHEMA)}.${sql(stg)}`;
  const p = sql`${sql(STAGING_SCHEMA)}.${sql(plan)}`;
  const inc = opts.fullResync ? undefined : await incrementalScan(sql, runId);
  await dropPlan(sql, runId);
  const baseBatch = sql.unsafe(`'base_batch=${Math.max(0, Math.floor(opts.baseBatch ?? 0))}'`);
  const countOps = (rows: { op: keyof OpCounts; n: number }[]) => {
    const planned: OpCounts = { insert: 0, update: 0, delete: 0 };
    for (const r of rows) planned[r.op] = r.n;
    return { planned, total: planned.insert + planned.update + planned.delete };
  };
  // The sync's snapshot holds no record (a first run, or every record deleted): every valid
  // staged row is written and nothing is deleted, so the plan is a view of the staged rows in
  // their seq order — no copy of the payloads (at a million rows the copy took ~3.6 s of a 7 s
  // diff; the index on seq ~0.3 s). Only this run writes the sync's snapshot.
  const [{ empty }] = await sql<{ empty: boolean }[]>`select not exists (select 1 from sync_snapshots where sync_id = ${opts.syncId}) as empty`;
  if (empty) {
    const op = sql.unsafe(opts.mode === 'update' ? `'update'` : `'insert'`);
    const rows = await sql.begin(async (tx) => {
      await assertStagingIntact(tx, runId);
      await tx`create index if not exists ${sql(`${stg}_seq`)} on ${s} (seq) where state = 'v'`;
      // Without statistics the planner takes "seq > x" for a few rows and sorts the rest of the
      // plan for each page of delivery (measured: a second per read at a million rows).
      if (!(await analyzed(tx, stg))) await analyzeStaged(tx, stg);
      await tx`
        create view ${p} as
        select seq, pk, ${op}::text as op, hash, payload, match, mkey, null::text as record_id, 0 as attempts, fp from ${s} where state = 'v'`;
      await tx`comment on view ${p} is ${baseBatch}`;
      return tx<{ op: keyof OpCounts; n: number }[]>`select ${op}::text as op, count(*)::int as n from ${s} where state = 'v'`;
    });
    return countOps(rows);
  }
  // A full read whose keys were proved distinct was not analyzed (markDuplicates): the join needs statistics.
  if (!(await analyzed(sql, stg))) await analyzeStaged(sql, stg);
  await sql`create unlogged table ${p} (
    seq bigserial primary key, pk text not null, op text not null, hash text, payload text, match text, mkey text not null,
    record_id text, state char(1) not null default 'p', attempts int not null default 0, fp text)`;
  // Records of batches numbered above this were written against this plan (see readPending).
  await sql`comment on table ${p} is ${baseBatch}`;

  const full = opts.fullResync;
  const { mode } = opts;
  const small = await smallStaged(sql, stg, inc?.rows, opts.lookups);
  // Few staged rows: their records are in rec_<run> (copyStagedRecords; markDuplicates copied them
  // unless it was called without the sync), so no plan reads every record of the sync.
  if (small && !(await tableExists(sql, records))) await copyStagedRecords(sql, runId, opts.syncId);
  const rec = sql`${sql(STAGING_SCHEMA)}.${sql(records)}`;
  const rows = await sql.begin(async (tx) => {
    await assertStagingIntact(tx, runId);
    await tx`set local work_mem = '64MB'`;
    // Writes: one pass over the valid staged rows, joined to the snapshot by record.
    const joined = small ? sql`left join ${rec} n on n.match_key = st.mkey` : sql`left join sync_snapshots n on n.sync_id = ${opts.syncId} and n.match_key = st.mkey`;
    await tx`
      insert into ${p} (pk, op, hash, payload, match, mkey, record_id, fp)
      select st.pk, case when n.match_key is null and ${mode !== 'update'} then 'insert'
                         when n.match_key is not null and ${mode === 'insert'} then 'insert'
                         else 'update' end,
             st.hash, st.payload, st.match, st.mkey, n.record_id, st.fp
      from ${s} st
      ${joined}
      where st.state = 'v'
        and case when n.match_key is null then true
                 when ${mode === 'insert'} then ${full}
                 else ${full} or n.hash is distinct from st.hash or n.primary_key <> st.pk end`;
    if (!full && !opts.dryRun) {
      // A row whose payload is what its record already holds (a column no mapping reads changed,
      // or the snapshot predates fingerprints) is not sent: its record takes the row's fingerprint,
      // so the next incremental run does not read it again. Few staged rows: the records to
      // refresh are found in rec_<run> first, then updated by key (an array parameter, which the
      // planner takes for a few rows).
      if (small) {
        const refresh = await tx<{ mkey: string; fp: string }[]>`
          select st.mkey, st.fp from ${s} st
          join ${rec} n on n.match_key = st.mkey and n.primary_key = st.pk and n.hash = st.hash and n.source_fp is distinct from st.fp
          where st.state = 'v' and st.fp is not null`;
        if (refresh.length) {
          await tx`
            update sync_snapshots n set source_fp = u.fp
            from unnest(${refresh.map((r) => r.mkey)}::text[], ${refresh.map((r) => r.fp)}::text[]) as u(mkey, fp)
            where n.sync_id = ${opts.syncId} and n.match_key = u.mkey`;
        }
      } else {
        await tx`
          update sync_snapshots n set source_fp = st.fp
          from ${s} st
          where n.sync_id = ${opts.syncId} and n.match_key = st.mkey and st.state = 'v' and st.fp is not null
            and n.primary_key = st.pk and n.hash = st.hash and n.source_fp is distinct from st.fp`;
      }
    }
    if (mode === 'mirror') {
      // Deletes, after every write (higher seq). One per last claimant and run: run records are
      // keyed by (primary key, operation); a second unclaimed record of the same row waits a run.
      // In an incremental run, a record is also claimed by an unchanged row: one whose key scan
      // matched the record's last claimant and fingerprint (that row was not read in full).
      await tx`
        insert into ${p} (pk, op, hash, payload, match, mkey, record_id)
        select distinct on (n.primary_key) n.primary_key, 'delete', null, json_build_object(${opts.matchField}::text, n.match_value)::text,
               n.match_value::text, n.match_key, n.record_id
        from sync_snapshots n
        where n.sync_id = ${opts.syncId}
          and not exists (select 1 from ${s} st where st.mkey = n.match_key)
          and not exists (select 1 from ${s} st where st.pk = n.primary_key and st.state <> 'v')
          ${inc ? sql`and not ${claimedByScan(sql, runId, inc)}` : sql``}`;
    }
    // Counted in the transaction that checked the staging intact (a plan emptied later is noticed by delivery).
    return tx<{ op: keyof OpCounts; n: number }[]>`select op, count(*)::int as n from ${p} group by op`;
  });
  return countOps(rows);
}

/** Records in the sync's snapshot (the base of the change thresholds). */
export async function snapshotSize(sql: Sql, syncId: string): Promise<number> {
  const [r] = await sql<{ n: number }[]>`select count(*)::int as n from sync_snapshots where sync_id = ${syncId}`;
  return r.n;
}

/** A sample of planned operations per operation (dry runs), payloads parsed. */
export async function planSample(sql: Sql, runId: string, perOp: number): Promise<{ primaryKey: string; operation: string; payload: unknown; recordId: string | null }[]> {
  const { plan } = stagingNames(runId);
  const rows = await sql<{ pk: string; op: string; payload: string | null; match: string | null; record_id: string | null }[]>`
    select pk, op, payload, match, record_id from (
      select *, row_number() over (partition by op order by seq) as k from ${sql(STAGING_SCHEMA)}.${sql(plan)}) x
    where k <= ${perOp} order by seq`;
  return rows.map((r) => ({ primaryKey: r.pk, operation: r.op, payload: r.payload ? parsePayload(r.payload) : null, recordId: r.record_id }));
}
