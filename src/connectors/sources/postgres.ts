import type { Column, Row, SourceConnector, StreamOptions, ResolvedSecrets } from '../types.ts';
import type { SqlDatabaseConfig } from '../sql-config.ts';
import { openPg, pgColumnType, type PgClient } from './pg-client.ts';
import { pgError } from './sql-errors.ts';
import { DEFAULT_STATEMENT_TIMEOUT_MS, PREVIEW_TIMEOUT_MS, cancelled, prepareModelSql } from './read-only.ts';

type Reserved = Awaited<ReturnType<PgClient['reserve']>>;

/**
 * PostgreSQL model source. Every model query runs on a reserved connection inside
 * `BEGIN READ ONLY` with `SET LOCAL statement_timeout`, through the extended protocol (one
 * statement only: `commit; delete …` cannot escape the transaction), and rows are fetched
 * through a portal (`cursor(n)`) so memory stays flat.
 */
export class PostgresSource implements SourceConnector {
  readonly #sql: PgClient;
  readonly #timeoutMs: number;

  constructor(config: SqlDatabaseConfig, secrets: ResolvedSecrets) {
    this.#sql = openPg(config, secrets.password, 3);
    this.#timeoutMs = config.statementTimeoutMs ?? DEFAULT_STATEMENT_TIMEOUT_MS;
  }

  async test(): Promise<void> {
    try {
      await this.#sql.unsafe('select 1');
    } catch (e) {
      throw pgError(e);
    }
  }

  async columns(sql: string): Promise<Column[]> {
    const q = prepareModelSql(sql);
    // Describe parses and plans nothing: no rows are read.
    return this.#inReadOnly(this.#timeoutMs, (r) => this.#describe(r, q));
  }

  async preview(sql: string, limit: number, opts: { timeoutMs?: number } = {}): Promise<{ columns: Column[]; rows: Row[] }> {
    const q = prepareModelSql(sql);
    const n = Math.max(0, Math.min(Math.floor(limit), 10_000));
    return this.#inReadOnly(opts.timeoutMs ?? Math.min(PREVIEW_TIMEOUT_MS, this.#timeoutMs), async (r) => {
      const columns = await this.#describe(r, q);
      const rows: Row[] = [];
      if (n > 0) {
        for await (const batch of r.unsafe(q, [], { prepare: false }).cursor(n)) {
          rows.push(...(batch as Row[]));
          break; // closing the portal stops the query after `n` rows
        }
      }
      return { columns, rows };
    });
  }

  async *stream(sql: string, opts: StreamOptions = {}): AsyncIterable<Row[]> {
    const q = prepareModelSql(sql);
    const batchSize = Math.max(1, opts.batchSize ?? 1000);
    const { signal } = opts;
    if (signal?.aborted) throw cancelled();
    const r = await this.#reserve();
    const query = r.unsafe(q, [], { prepare: false });
    const onAbort = () => void query.cancel();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      await r.unsafe(`begin read only`);
      await r.unsafe(`set local statement_timeout = ${Math.floor(this.#timeoutMs)}`);
      // One batch of read-ahead: PostgreSQL produces the next batch while the caller maps this
      // one (a plain for-await fetches only once the caller is done, leaving both sides idle in turn).
      const it = query.cursor(batchSize)[Symbol.asyncIterator]();
      const fetchNext = () => {
        const p = Promise.resolve(it.next());
        p.catch(() => {}); // awaited below; a read-ahead abandoned by an early exit must not go unhandled
        return p;
      };
      let next = fetchNext();
      let done = false;
      try {
        for (;;) {
          const r = await next;
          if (r.done) {
            done = true;
            break;
          }
          if (signal?.aborted) throw cancelled();
          next = fetchNext();
          yield r.value as Row[];
        }
      } finally {
        // An early exit closes the cursor once the read-ahead batch has arrived (postgres.js can
        // only close a cursor that is waiting on its consumer), so the connection is released.
        if (!done) await next.then((r) => void (r.done || it.return?.()), () => {});
      }
    } catch (e) {
      throw signal?.aborted ? cancelled() : pgError(e);
    } finally {
      signal?.removeEventListener('abort', onAbort);
      await this.#finish(r);
    }
  }

  async close(): Promise<void> {
    await this.#sql.end({ timeout: 5 });
  }

  async #reserve(): Promise<Reserved> {
    try {
      return await this.#sql.reserve();
    } catch (e) {
      throw pgError(e);
    }
  }

  async #finish(r: Reserved): Promise<void> {
    try {
      await r.unsafe('rollback');
    } catch {
      // the connection is gone; postgres.js replaces it
    } finally {
      r.release();
    }
  }

  async #inReadOnly<T>(timeoutMs: number, fn: (r: Reserved) => Promise<T>): Promise<T> {
    const r = await this.#reserve();
    try {
      await r.unsafe('begin read only');
      await r.unsafe(`set local statement_timeout = ${Math.max(1, Math.floor(timeoutMs))}`);
      return await fn(r);
    } catch (e) {
      throw pgError(e);
    } finally {
      await this.#finish(r);
    }
  }

  async #describe(r: Reserved, q: string): Promise<Column[]> {
    const d = await r.unsafe(q, [], { prepare: false }).describe();
    const oids = [...new Set(d.columns.map((c) => c.type))];
    const types = oids.length
      ? await r.unsafe<{ oid: number; category: string; name: string }[]>(
          `select oid::int as oid, typcategory as category, format_type(oid, null) as name from pg_type where oid = any($1::oid[])`,
          [`{${oids.join(',')}}`],
        )
      : [];
    const byOid = new Map(types.map((t) => [Number(t.oid), t]));
    return d.columns.map((c) => {
      const t = byOid.get(c.type);
      return { name: c.name, type: pgColumnType(c.type, t?.category), nativeType: t?.name ?? String(c.type) };
    });
  }
}

export function openPostgresSource(config: SqlDatabaseConfig, secrets: ResolvedSecrets): SourceConnector {
  return new PostgresSource(config, secrets);
}
