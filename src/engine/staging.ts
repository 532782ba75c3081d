import { once } from 'node:events';
import type { Writable } from 'node:stream';
import type { Sql } from '../db/client.ts';

// Per-run tables in schema backhaul_staging. UNLOGGED: they are scratch space, rebuilt from the
// source when lost (a run checks the plan's size before trusting it after a restart).
//   stg_<run>  (pk, hash, payload, state)  every queried row; state v=valid, i=invalid, d=duplicate pk
//   plan_<run> (seq, pk, op, hash, payload, state, attempts)  operations to send; state p/s/r

export const STAGING_SCHEMA = 'backhaul_staging';

export function stagingNames(runId: string): { stg: string; plan: string } {
  const safe = runId.replace(/[^a-z0-9_]/g, '');
  return { stg: `stg_${safe}`, plan: `plan_${safe}` };
}

export async function tableExists(sql: Sql, name: string): Promise<boolean> {
  const [r] = await sql<{ exists: boolean }[]>`select to_regclass(${`${STAGING_SCHEMA}.${name}`}) is not null as exists`;
  return r.exists;
}

export async function createStaging(sql: Sql, runId: string): Promise<void> {
  const { stg } = stagingNames(runId);
  await sql`drop table if exists ${sql(STAGING_SCHEMA)}.${sql(stg)}`;
  await sql`create unlogged table ${sql(STAGING_SCHEMA)}.${sql(stg)} (pk text not null, hash text, payload text, state char(1) not null)`;
}

export async function dropRunTables(sql: Sql, runId: string): Promise<void> {
  const { stg, plan } = stagingNames(runId);
  await sql`drop table if exists ${sql(STAGING_SCHEMA)}.${sql(stg)}`;
  await sql`drop table if exists ${sql(STAGING_SCHEMA)}.${sql(plan)}`;
}

/** COPY text-format escaping: backslash, tab, newline, carriage return. */
export function copyEscape(s: string): string {
  return /[\\\t\n\r]/.test(s) ? s.replace(/[\\\t\n\r]/g, (c) => (c === '\\' ? '\\\\' : c === '\t' ? '\\t' : c === '\n' ? '\\n' : '\\r')) : s;
}

/** Streams rows into stg_<run> with COPY, honouring backpressure (memory stays flat). */
export class StagingWriter {
  private readonly stream: Writable;
  private buf: string[] = [];
  private bufLen = 0;

  private constructor(stream: Writable) {
    this.stream = stream;
  }

  static async open(sql: Sql, runId: string): Promise<StagingWriter> {
    const { stg } = stagingNames(runId);
    const stream = await sql`copy ${sql(STAGING_SCHEMA)}.${sql(stg)} (pk, hash, payload, state) from stdin`.writable();
    return new StagingWriter(stream);
  }

  async write(pk: string, hash: string | null, payload: string | null, state: 'v' | 'i'): Promise<void> {
    const line = `${copyEscape(pk)}\t${hash ?? '\\N'}\t${payload === null ? '\\N' : copyEscape(payload)}\t${state}\n`;
    this.buf.push(line);
    this.bufLen += line.length;
    if (this.bufLen >= 256 * 1024) await this.flush();
  }

  private async flush(): Promise<void> {
    if (!this.buf.length) return;
    const chunk = this.buf.join('');
    this.buf = [];
    this.bufLen = 0;
    if (!this.stream.write(chunk)) await once(this.stream, 'drain');
  }

  async end(): Promise<void> {
    await this.flush();
    const done = once(this.stream, 'finish');
    this.stream.end();
    await done;
  }

  destroy(err?: Error): void {
    this.stream.destroy(err);
  }
}
