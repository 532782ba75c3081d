import type mysql from 'mysql2/promise';
import type { Connection as CallbackConnection } from 'mysql2';
import type { Readable } from 'node:stream';
import type { Column, ResolvedSecrets, Row, SourceConnector, StreamOptions } from '../types.ts';
import type { SqlDatabaseConfig } from '../sql-config.ts';
import { acquire, mysqlColumn, openMysql } from './mysql-client.ts';
import { mysqlError } from './sql-errors.ts';
import { DEFAULT_STATEMENT_TIMEOUT_MS, PREVIEW_TIMEOUT_MS, cancelled, prepareModelSql } from './read-only.ts';

/**
 * MySQL / MariaDB model source. Queries run in `START TRANSACTION READ ONLY` with a session
 * statement timeout; rows are streamed from the server (mysql2 `query().stream()`, which pauses
 * the socket when we stop reading), so memory stays flat. A connection whose result was not read
 * to the end is destroyed rather than returned to the pool.
 */
export class MysqlSource implements SourceConnector {
  readonly #pool: mysql.Pool;
  readonly #timeoutMs: number;

  constructor(config: SqlDatabaseConfig, secrets: ResolvedSecrets) {
    this.#pool = openMysql(config, secrets.password, 3);
    this.#timeoutMs = config.statementTimeoutMs ?? DEFAULT_STATEMENT_TIMEOUT_MS;
  }

  async test(): Promise<void> {
    const { conn } = await acquire(this.#pool);
    try {
      await conn.query('SELECT 1');
    } catch (e) {
      throw mysqlError(e);
    } finally {
      conn.release();
    }
  }

  async columns(sql: string): Promise<Column[]> {
    const q = prepareModelSql(sql);
    const { conn } = await acquire(this.#pool, this.#timeoutMs);
    try {
      // Preparing a statement returns its column definitions without executing it.
      const stmt = (await conn.prepare(q)) as unknown as { statement: { columns?: Parameters<typeof mysqlColumn>[0][] }; close(): Promise<void> };
      const cols = (stmt.statement.columns ?? []).map(mysqlColumn);
      await stmt.close();
      return cols;
    } catch (e) {
      throw mysqlError(e);
    } finally {
      conn.release();
    }
  }

  async preview(sql: string, limit: number, opts: { timeoutMs?: number } = {}): Promise<{ columns: Column[]; rows: Row[] }> {
    const n = Math.max(0, Math.min(Math.floor(limit), 10_000));
    const timeoutMs = opts.timeoutMs ?? Math.min(PREVIEW_TIMEOUT_MS, this.#timeoutMs);
    const rows: Row[] = [];
    let columns: Column[] = [];
    for await (const batch of this.#run(sql, Math.max(1, n), timeoutMs, undefined, (c) => (columns = c))) {
      rows.push(...batch.slice(0, n - rows.length));
      if (rows.length >= n) break;
    }
    return { columns, rows };
  }

  stream(sql: string, opts: StreamOptions = {}): AsyncIterable<Row[]> {
    return this.#run(sql, Math.max(1, opts.batchSize ?? 1000), this.#timeoutMs, opts.signal);
  }

  async close(): Promise<void> {
    await this.#pool.end();
  }

  async *#run(sql: string, batchSize: number, timeoutMs: number, signal?: AbortSignal, onFields?: (c: Column[]) => void): AsyncGenerator<Row[]> {
    const q = prepareModelSql(sql);
    if (signal?.aborted) throw cancelled();
    const { conn } = await acquire(this.#pool, timeoutMs);
    let clean = false;
    let stream: Readable | undefined;
    const onAbort = () => conn.destroy();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      await conn.query('START TRANSACTION READ ONLY');
      // The callback-API connection underneath gives a streaming Query.
      const query = (conn.connection as unknown as CallbackConnection).query(q);
      if (onFields) query.on('fields', (fields: Parameters<typeof mysqlColumn>[0][]) => onFields(fields.map(mysqlColumn)));
      stream = query.stream({ highWaterMark: batchSize });
      let batch: Row[] = [];
      for await (const row of stream) {
        batch.push(row as Row);
        if (batch.length >= batchSize) {
          if (signal?.aborted) throw cancelled();
          yield batch;
          batch = [];
        }
      }
      if (batch.length) yield batch;
      clean = true;
    } catch (e) {
      throw signal?.aborted ? cancelled() : mysqlError(e);
    } finally {
      signal?.removeEventListener('abort', onAbort);
      if (clean) {
        try {
          await conn.query('ROLLBACK');
          conn.release();
        } catch {
          conn.destroy();
        }
      } else {
        // Unread rows are still on the wire: the connection cannot be reused.
        stream?.destroy();
        conn.destroy();
      }
    }
  }
}

export function openMysqlSource(config: SqlDatabaseConfig, secrets: ResolvedSecrets): SourceConnector {
  return new MysqlSource(config, secrets);
}
