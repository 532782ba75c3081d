import { once } from 'node:events';
import type { Writable } from 'node:stream';
import type { Sql } from '../db/client.ts';

// Per-run tables in schema backhaul_staging. UNLOGGED: they are scratch space, rebuilt from the
// source when lost (a run checks the plan's size before trusting it after a restart).
//   stg_<run>  (pk, hash, payload, state, match, mkey, fp)  every queried row (an incremental run:
//              every row read in full, i.e. new and changed ones); state v=valid, i=invalid,
//              d=duplicate primary key, m=claims the same destination record as another row,
//              g=left the model between an incremental run's key scan and its fetch;
//              match = the JSON of the payload's match value (what the snapshot keeps for deletes),
//              mkey = its match key (normalised by the destination's equality: the record's identity),
//              fp = `<evaluation version>:<source fingerprint>` (what the snapshot keeps, see query.ts)
//   keys_<run> (pk, fp)  an incremental run's key scan compared in SQL: every row's primary key and fingerprint
//   unm_<run>  (pk, fp)  an incremental run's key scan compared in memory: the snapshot's pairs no
//              scanned row showed (the records no unchanged row claims)
//   chg_<run>  (pk)      its keys read in full (new, changed or duplicated)
//   rec_<run>  (match_key, primary_key, hash, match_value, record_id, source_fp)  the snapshot
//              records the staged rows claim, copied once for the diff when few rows were staged
//   plan_<run> (seq, pk, op, hash, payload, match, mkey, record_id, fp)  operations to send, in seq
//              order, deletes last. Which are done is not stored here but derived from the run's
//              outcomes (run_records, run_batches).
//   done_<run> (pk, op)  a resumed delivery: the operations recorded against the plan before it
//              resumed (built once per execution, so that reading the plan stays by key).

export const STAGING_SCHEMA = 'backhaul_staging';

export function stagingNames(runId: string): { stg: string; plan: string; keys: string; changed: string; unmatched: string; records: string; done: string } {
  const safe = runId.replace(/[^a-z0-9_]/g, '');
  return { stg: `stg_${safe}`, plan: `plan_${safe}`, keys: `keys_${safe}`, changed: `chg_${safe}`, unmatched: `unm_${safe}`, records: `rec_${safe}`, done: `done_${safe}` };
}

export async function tableExists(sql: Sql, name: string): Promise<boolean> {
  const [r] = await sql<{ exists: boolean }[]>`select to_regclass(${`${STAGING_SCHEMA}.${name}`}) is not null as exists`;
  return r.exists;
}

export async function createStaging(sql: Sql, runId: string): Promise<void> {
  const { stg } = stagingNames(runId);
  await sql`drop table if exists ${sql(STAGING_SCHEMA)}.${sql(stg)}`;
  await sql`create unlogged table ${sql(STAGING_SCHEMA)}.${sql(stg)} (pk text not null, hash text, payload text, state char(1) not null, match text, mkey text, fp text)`;
}

export async function dropRunTables(sql: Sql, runId: string): Promise<void> {
  const { stg, plan, keys, changed, unmatched, records, done } = stagingNames(runId);
  const t = (name: string) => sql`${sql(STAGING_SCHEMA)}.${sql(name)}`;
  await sql`drop table if exists ${t(stg)}, ${t(plan)}, ${t(keys)}, ${t(changed)}, ${t(unmatched)}, ${t(records)}, ${t(done)}`;
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
      const stream = await conn`copy ${conn(STAGING_SCHEMA)}.${conn(stg)} (pk, hash, payload, state, match, mkey, fp) from stdin`.writable();
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
    // At most 3 UTF-8 bytes per UTF-16 code unit; 7 separators.
    const most = 3 * (f0.length + (hash?.length ?? 2) + (f2?.length ?? 2) + 1 + (f4?.length ?? 2) + (f5?.length ?? 2) + (f6?.length ?? 2)) + 7;
    const flushed = this.len + most > this.chunk.length ? this.handOff(most) : undefined;
    const b = this.chunk;
    let o = this.len;
    o += b.write(f0, o);
    b[o++] = TAB;
    o += b.write(hash ?? NULL_FIELD, o);
    b[o++] = TAB;
    o += b.write(f2 ?? NULL_FIELD, o);
    b[o++] = TAB;
    o += b.write(state, o);
    b[o++] = TAB;
    o += b.write(f4 ?? NULL_FIELD, o);
    b[o++] = TAB;
    o += b.write(f5 ?? NULL_FIELD, o);
    b[o++] = TAB;
    o += b.write(f6 ?? NULL_FIELD, o);
    b[o++] = NEWLINE;
    this.len = o;
    return flushed;
  }

  /** Hands the filled part of the chunk to the COPY and starts one that holds at least `room` bytes. */
  private handOff(room: number): Promise<void> | undefined {
    if (this.failed) return Promise.reject(this.failed);
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

  async end(): Promise<void> {
    await this.flush();
    if (this.failed) throw this.failed;
    const done = once(this.stream, 'finish');
    this.stream.end();
    try {
      await done;
    } finally {
      this.release();
    }
  }

  destroy(err?: Error): void {
    this.stream.destroy(err);
    this.release();
  }
}
