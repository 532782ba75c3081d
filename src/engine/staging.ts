import { once } from 'node:events';
import type { Writable } from 'node:stream';
import type postgres from 'postgres';
import type { Sql } from '../db/client.ts';
import { hash53 } from './fingerprint-index.ts';

// Per-run tables in schema backhaul_staging. UNLOGGED: they are scratch space, rebuilt from the
// source when lost (a run checks the plan's size before trusting it after a restart).
//   stg_<run>  (pk, hash, payload, state, match, mkey, fp, seq)  every queried row (an incremental run:
//              every row read in full, i.e. new and changed ones); state v=valid, i=invalid,
//              d=duplicate primary key, m=claims the same destination record as another row,
//              g=left the model between an incremental run's key scan and its fetch;
//              match = the JSON of the payload's match value (what the snapshot keeps for deletes),
//              mkey = its match key (normalised by the destination's equality: the record's identity),
//              fp = `<evaluation version>:<source fingerprint>` (what the snapshot keeps, see query.ts),
//              seq = the row's place in the writer's order (1, 2, …; null for rows the diff adds)
//   keys_<run> (pk, fp)  an incremental run's key scan compared in SQL: every row's primary key and fingerprint
//   unm_<run>  (pk, fp)  an incremental run's key scan compared in memory: the snapshot's pairs no
//              scanned row showed (the records no unchanged row claims)
//   chg_<run>  (pk)      its keys read in full (new, changed or duplicated)
//   rec_<run>  (match_key, primary_key, hash, match_value, record_id, source_fp)  the snapshot
//              records the staged rows claim, copied once for the diff when few rows were staged
//   plan_<run> (seq, pk, op, hash, payload, match, mkey, record_id, fp)  operations to send, in seq
//              order, deletes last. Which are done is not stored here but derived from the run's
//              outcomes (run_records, run_batches). A table; or, when the sync's snapshot is
//              empty (every valid row is written, nothing deleted), a view over stg_<run>'s valid
//              rows (diff.ts: no copy of the payloads).
//   done_<run> (pk, op)  a resumed delivery: the operations recorded against the plan before it
//              resumed (built once per execution, so that reading the plan stays by key).
//   ok_<run>   (intact)  one row, written once every staged table of the run is complete: see
//              markStagingIntact.

export const STAGING_SCHEMA = 'backhaul_staging';

export function stagingNames(runId: string): { stg: string; plan: string; keys: string; changed: string; unmatched: string; records: string; done: string; intact: string } {
  const safe = runId.replace(/[^a-z0-9_]/g, '');
  return {
    stg: `stg_${safe}`,
    plan: `plan_${safe}`,
    keys: `keys_${safe}`,
    changed: `chg_${safe}`,
    unmatched: `unm_${safe}`,
    records: `rec_${safe}`,
    done: `done_${safe}`,
    intact: `ok_${safe}`,
  };
}

/** The per-run tables' name prefixes (a table is prefix + run id). */
export const STAGING_PREFIXES: string[] = Object.values(stagingNames(''));

// Crash recovery of PostgreSQL (an OOM kill, a power cut, an immediate shutdown) and a failover
// to a standby EMPTY every unlogged table, all at once, and keep the tables themselves. A run
// that trusted its staged rows after that would find no row claiming any record: in mirror mode
// it would plan to delete the whole destination (reproduced: test/chaos/db-crash.test.ts), and a
// plan emptied mid-delivery would end the run as succeeded with rows never sent. So ok_<run>
// holds one row written after the run's staged tables were complete: while it is there, nothing
// was emptied since. Whoever reads staged rows to decide what to send or delete checks it in the
// same transaction (a crash cannot fall between a check and a read of one transaction).

/** Raised when the run's staged rows or plan were emptied by a crash or failover of PostgreSQL: the run must read the model again. */
export class StagingLostError extends Error {
  constructor(runId: string) {
    super(`The control database lost run ${runId}'s staged rows (a crash or failover of PostgreSQL empties unlogged tables): the run reads the model again.`);
    this.name = 'StagingLostError';
  }
}

/** Records that the run's staged tables (stg, keys, unm, chg) are complete: call after querying, before staged_at is set. */
export async function markStagingIntact(sql: Sql, runId: string): Promise<void> {
  const ok = sql`${sql(STAGING_SCHEMA)}.${sql(stagingNames(runId).intact)}`;
  await sql`drop table if exists ${ok}`;
  await sql`create unlogged table ${ok} as select true as intact`;
}

/** Whether the run's staged tables are as querying left them (neither dropped nor emptied by a crash since markStagingIntact). */
export async function stagingIntact(sql: Sql, runId: string): Promise<boolean> {
  const { intact } = stagingNames(runId);
  if (!(await tableExists(sql, intact))) return false;
  const [r] = await sql<{ ok: boolean }[]>`select exists (select 1 from ${sql(STAGING_SCHEMA)}.${sql(intact)}) as ok`;
  return r.ok;
}

/** SQL: true while the run's staged tables are intact (ok_<run> must exist: stagingIntact was true once in this execution). */
export function intactSql(sql: Sql, runId: string) {
  return sql`exists (select 1 from ${sql(STAGING_SCHEMA)}.${sql(stagingNames(runId).intact)})`;
}

/** Throws StagingLostError unless the run's staged tables are intact; call inside the transaction that reads them. */
export async function assertStagingIntact(sql: Sql | postgres.TransactionSql, runId: string): Promise<void> {
  const [r] = await sql<{ ok: boolean }[]>`select exists (select 1 from ${sql(STAGING_SCHEMA)}.${sql(stagingNames(runId).intact)}) as ok`;
  if (!r.ok) throw new StagingLostError(runId);
}

export async function tableExists(sql: Sql, name: string): Promise<boolean> {
  const [r] = await sql<{ exists: boolean }[]>`select to_regclass(${`${STAGING_SCHEMA}.${name}`}) is not null as exists`;
  return r.exists;
}

export async function createStaging(sql: Sql, runId: string): Promise<void> {
  const { stg, intact } = stagingNames(runId);
  // Not intact until querying completes again. A plan that is a view over the old rows goes with them.
  await sql`drop table if exists ${sql(STAGING_SCHEMA)}.${sql(intact)}, ${sql(STAGING_SCHEMA)}.${sql(stg)} cascade`;
  await sql`create unlogged table ${sql(STAGING_SCHEMA)}.${sql(stg)} (pk text not null, hash text, payload text, state char(1) not null, match text, mkey text, fp text, seq bigint)`;
}

/**
 * ANALYZE of one of a run's tables in STAGING_SCHEMA (of `columns` only, when given) with a
 * statistics target of 10: 3,000 sampled rows instead of 30,000. The run's queries need row
 * counts and distinct counts from them, not fine histograms, and sorting the larger sample was
 * most of the time (measured on 20,000 keys: 28 ms → 5 ms). One round trip: SET LOCAL and
 * ANALYZE go in one simple query, an implicit transaction (in a caller's transaction, the
 * setting lasts until its end).
 */
export async function analyzeStaging(sql: Sql | postgres.TransactionSql, table: string, columns?: string[]): Promise<void> {
  const ident = (name: string) => `"${name.replace(/"/g, '""')}"`;
  const cols = columns?.length ? ` (${columns.map(ident).join(', ')})` : '';
  await sql.unsafe(`set local default_statistics_target = 10; analyze ${ident(STAGING_SCHEMA)}.${ident(table)}${cols}`);
}

/** Drops the run's plan, a table or a view (diff.ts). */
export async function dropPlan(sql: Sql, runId: string): Promise<void> {
  const name = `${STAGING_SCHEMA}.${stagingNames(runId).plan}`;
  const [r] = await sql<{ kind: string }[]>`select relkind as kind from pg_class where oid = to_regclass(${name})`;
  const p = sql`${sql(STAGING_SCHEMA)}.${sql(stagingNames(runId).plan)}`;
  if (r?.kind === 'v') await sql`drop view if exists ${p}`;
  else if (r) await sql`drop table if exists ${p}`;
}

export async function dropRunTables(sql: Sql, runId: string): Promise<void> {
  const { stg, keys, changed, unmatched, records, done, intact } = stagingNames(runId);
  const t = (name: string) => sql`${sql(STAGING_SCHEMA)}.${sql(name)}`;
  await dropPlan(sql, runId);
  await sql`drop table if exists ${t(intact)}, ${t(stg)}, ${t(keys)}, ${t(changed)}, ${t(unmatched)}, ${t(records)}, ${t(done)} cascade`;
}

/** COPY text-format escaping: backslash, tab, newline, carriage return. */
export function copyEscape(s: string): string {
  return /[\\\t\n\r]/.test(s) ? s.replace(/[\\\t\n\r]/g, (c) => (c === '\\' ? '\\\\' : c === '\t' ? '\\t' : c === '\n' ? '\\n' : '\\r')) : s;
}

const TAB = 9;
const NEWLINE = 10;
const NULL_FIELD = '\\N';

/** Bytes of COPY text sent to PostgreSQL at a time (a row longer than that goes alone, in a chunk of its size). */
const CHUNK_BYTES = 256 * 1024;

/**
 * Whether every key added is distinct, proved by 53-bit hashes of the keys' bytes (8 bytes a
 * key, sorted once at the end): all hashes distinct proves the keys distinct; two equal hashes
 * (a duplicate, or rarely two keys colliding: ~1 in 18,000 runs at a million keys) prove
 * nothing, and the caller then asks PostgreSQL.
 */
export class DistinctProof {
  #h = new Float64Array(4096);
  #n = 0;

  add(hash: number): void {
    if (this.#n === this.#h.length) {
      const grown = new Float64Array(this.#h.length * 2);
      grown.set(this.#h);
      this.#h = grown;
    }
    this.#h[this.#n++] = hash;
  }

  /** True when no two hashes added are equal; the hashes are released. */
  distinct(): boolean {
    const a = this.#h.subarray(0, this.#n).sort();
    this.#h = new Float64Array(0);
    this.#n = 0;
    for (let i = 1; i < a.length; i++) if (a[i] === a[i - 1]) return false;
    return true;
  }
}

/** What a StagingWriter proved of the rows it staged (all of stg_<run>): see DistinctProof. */
export interface StagedDistinct {
  /** No two staged rows (of any state) have one primary key. */
  primaryKeys: boolean;
  /** No two valid staged rows claim one match key. */
  matchKeys: boolean;
}

/**
 * Streams rows into stg_<run> with COPY, honouring backpressure (memory stays flat). Each field
 * is encoded as UTF-8 straight into the chunk being filled: no line string is built and no chunk
 * string joined (at 1M rows that was about a tenth of the worker's time while querying, and much
 * of its garbage).
 */
export class StagingWriter {
  private readonly stream: Writable;
  private chunk = Buffer.allocUnsafe(CHUNK_BYTES);
  private len = 0;
  /** The COPY's failure (connection lost, statement error): raised by the next flush or end. */
  private failed: Error | undefined;

  private readonly release: () => void;
  /** Hashes of every row's primary key and of every valid row's match key (the escaped bytes: escaping is one-to-one). */
  private readonly pks = new DistinctProof();
  private readonly mkeys = new DistinctProof();
  /** Rows written so far: the last row's seq. */
  private seq = 0;

  private constructor(stream: Writable, release: () => void) {
    this.stream = stream;
    this.release = release;
    // Without a listener a failing COPY stream would crash the process with an uncaught 'error'.
    stream.on('error', (e: Error) => {
      this.failed ??= e;
    });
  }

  static async open(sql: Sql, runId: string): Promise<StagingWriter> {
    const { stg } = stagingNames(runId);
    // A connection of its own: on a shared pool connection postgres.js may pipeline other
    // queries behind the COPY, which PostgreSQL answers with "protocol synchronization was lost".
    const conn = await sql.reserve();
    try {
      const stream = await conn`copy ${conn(STAGING_SCHEMA)}.${conn(stg)} (pk, hash, payload, state, match, mkey, fp, seq) from stdin`.writable();
      let released = false;
      const release = () => {
        if (released) return;
        released = true;
        conn.release();
      };
      return new StagingWriter(stream, release);
    } catch (e) {
      conn.release();
      throw e;
    }
  }

  /**
   * Buffers one row (a COPY text line; null fields as \N); returns a promise only when a full
   * chunk was handed to the COPY (await it then: it settles once the stream can take more).
   */
  write(pk: string, hash: string | null, payload: string | null, state: 'v' | 'i' | 'g', match: string | null = null, mkey: string | null = null, fp: string | null = null): Promise<void> | undefined {
    const f0 = copyEscape(pk);
    const f2 = payload === null ? null : copyEscape(payload);
    const f4 = match === null ? null : copyEscape(match);
    const f5 = mkey === null ? null : copyEscape(mkey);
    const f6 = fp === null ? null : copyEscape(fp);
    // At most 3 UTF-8 bytes per UTF-16 code unit; 8 separators; the seq's at most 16 digits.
    const most = 3 * (f0.length + (hash?.length ?? 2) + (f2?.length ?? 2) + 1 + (f4?.length ?? 2) + (f5?.length ?? 2) + (f6?.length ?? 2)) + 8 + 16;
    const flushed = this.len + most > this.chunk.length ? this.handOff(most) : undefined;
    const b = this.chunk;
    let o = this.len;
    o += b.write(f0, o);
    this.pks.add(hash53(b, this.len, o));
    b[o++] = TAB;
    o += b.write(hash ?? NULL_FIELD, o);
    b[o++] = TAB;
    o += b.write(f2 ?? NULL_FIELD, o);
    b[o++] = TAB;
    o += b.write(state, o);
    b[o++] = TAB;
    o += b.write(f4 ?? NULL_FIELD, o);
    b[o++] = TAB;
    const m = o;
    o += b.write(f5 ?? NULL_FIELD, o);
    if (state === 'v' && f5 !== null) this.mkeys.add(hash53(b, m, o));
    b[o++] = TAB;
    o += b.write(f6 ?? NULL_FIELD, o);
    b[o++] = TAB;
    o += b.write(String(++this.seq), o, 'latin1');
    b[o++] = NEWLINE;
    this.len = o;
    return flushed;
  }

  /** Hands the filled part of the chunk to the COPY and starts one that holds at least `room` bytes. */
  private handOff(room: number): Promise<void> | undefined {
    if (this.failed) return Promise.reject(this.failed);
    // A destroyed stream takes nothing and never drains.
    if (this.stream.destroyed) return Promise.reject(new Error('the staging COPY was ended'));
    const full = this.chunk.subarray(0, this.len);
    this.chunk = Buffer.allocUnsafe(Math.max(CHUNK_BYTES, room));
    this.len = 0;
    if (!full.length) return undefined;
    return this.stream.write(full) ? Promise.resolve() : once(this.stream, 'drain').then(() => undefined);
  }

  private async flush(): Promise<void> {
    if (this.failed) throw this.failed;
    if (this.len) await this.handOff(0);
  }

  /**
   * Ends the COPY; resolves with what the hashes prove of the rows written (every row of
   * stg_<run> when the table was created for this writer: markDuplicates then skips the
   * aggregates over it that would find no duplicate, ~3 s at a million rows).
   */
  async end(): Promise<StagedDistinct> {
    await this.flush();
    if (this.failed) throw this.failed;
    const done = once(this.stream, 'finish');
    this.stream.end();
    try {
      await done;
    } finally {
      this.release();
    }
    return { primaryKeys: this.pks.distinct(), matchKeys: this.mkeys.distinct() };
  }

  destroy(err?: Error): void {
    this.stream.destroy(err);
    this.release();
  }
}
