import type mysql from 'mysql2/promise';
import type { ColumnType, DestinationCapabilities, DestinationConnector, DestinationField, DestinationObject, ResolvedSecrets, RowResult, WriteRequest, WriteResult } from '../types.ts';
import type { SqlDatabaseConfig } from '../sql-config.ts';
import { acquire, openMysql, quoteMysqlIdent as q } from '../sources/mysql-client.ts';
import { mysqlError } from '../sources/sql-errors.ts';
import { TABLE_CAPABILITIES, chunks, columnsOf, groupByShape, isolate, notFound, objectNotFound, rowsWithMatchValue, type Savepoints } from './table-common.ts';
import { stringifyJson } from '../../lib/json.ts';

interface MyColumn {
  name: string;
  dataType: string;
  type: ColumnType;
  required: boolean;
  identifier: boolean;
}

interface TableInfo {
  columns: Map<string, MyColumn>;
  at: number;
}

const CACHE_MS = 60_000;
const MAX_PARAMS = 30_000;

function commonType(dataType: string, columnType: string, isJson: boolean): ColumnType {
  if (isJson || dataType === 'json') return 'json';
  if (dataType === 'tinyint' && /^tinyint\(1\)/.test(columnType)) return 'boolean';
  if (/^(tinyint|smallint|mediumint|int|integer|bigint|year)$/.test(dataType)) return 'integer';
  if (/^(decimal|numeric|float|double|real)$/.test(dataType)) return 'decimal';
  if (dataType === 'date') return 'date';
  if (dataType === 'datetime' || dataType === 'timestamp') return 'timestamp';
  return 'string';
}

/** ISO-8601 → 'YYYY-MM-DD HH:MM:SS.ffffff' in UTC (the session's zone): MySQL does not accept 'Z'. */
function mysqlDateTime(v: string): string {
  if (!/[T ]\d\d:\d\d/.test(v) || !/(Z|[+-]\d\d:?\d\d)$/.test(v)) return v.replace('T', ' ');
  const frac = /\.(\d+)/.exec(v)?.[1] ?? '';
  const d = new Date(v);
  if (Number.isNaN(d.getTime())) return v;
  const base = d.toISOString().slice(0, 19).replace('T', ' ');
  return frac ? `${base}.${frac.slice(0, 6)}` : base;
}

function param(v: unknown, col: MyColumn): string | number | null {
  if (v === null || v === undefined) return null;
  if (col.type === 'json') return stringifyJson(v);
  if (typeof v === 'boolean') return v ? 1 : 0;
  if (v instanceof Date) v = v.toISOString();
  if (typeof v === 'object') return stringifyJson(v);
  if (typeof v === 'number') return v;
  const s = String(v);
  if (col.type === 'timestamp') return mysqlDateTime(s);
  if (col.type === 'date' && /^\d{4}-\d\d-\d\dT/.test(s)) return s.slice(0, 10);
  return s;
}

// Server errors caused by a row's values: rejected rows, not a failed batch.
const DATA_ERRNOS = new Set([1048, 1062, 1136, 1216, 1217, 1263, 1264, 1265, 1292, 1364, 1366, 1367, 1406, 1411, 1451, 1452, 1690, 3140, 3819, 4025, 4078]);
const REJECTION_CODES: Record<number, string> = {
  1062: 'duplicate', 1048: 'not_null_violation', 1364: 'not_null_violation', 3819: 'check_violation', 4025: 'check_violation',
  1216: 'foreign_key_violation', 1217: 'foreign_key_violation', 1451: 'foreign_key_violation', 1452: 'foreign_key_violation',
};

const savepoints = (conn: mysql.PoolConnection): Savepoints => ({
  savepoint: async () => void (await conn.query('SAVEPOINT bh_rows')),
  release: async () => void (await conn.query('RELEASE SAVEPOINT bh_rows')),
  rollback: async () => void (await conn.query('ROLLBACK TO SAVEPOINT bh_rows')),
  isDataError: (e) => DATA_ERRNOS.has(Number((e as { errno?: number }).errno)),
  rejection: (e) => {
    const err = e as { errno?: number; message?: string };
    return { code: REJECTION_CODES[err.errno ?? 0] ?? 'invalid_value', message: err.message ?? String(e) };
  },
});

/**
 * A MySQL/MariaDB database as a destination: objects are its tables. Same model as the
 * PostgreSQL one: set-based statements in one transaction per batch, values always bound
 * (mysql2 escapes them), bad rows isolated under savepoints. Upserts use ON DUPLICATE KEY
 * UPDATE, which matches on any unique key of the table (MySQL has no ON CONFLICT target).
 */
export class MysqlTableDestination implements DestinationConnector {
  readonly #pool: mysql.Pool;
  readonly #database: string;
  readonly #tables = new Map<string, TableInfo>();

  constructor(config: SqlDatabaseConfig, secrets: ResolvedSecrets, ctx: { denyPrivateNetworks: boolean } = { denyPrivateNetworks: false }) {
    this.#pool = openMysql(config, secrets.password, 4, { denyPrivateNetworks: ctx.denyPrivateNetworks });
    this.#database = config.database;
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

  async objects(): Promise<DestinationObject[]> {
    try {
      const [rows] = await this.#pool.query<mysql.RowDataPacket[]>(
        `SELECT TABLE_NAME AS name FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME`,
        [this.#database],
      );
      return rows.map((r) => ({ name: String(r.name) }));
    } catch (e) {
      throw mysqlError(e);
    }
  }

  async fields(object: string): Promise<DestinationField[]> {
    const t = await this.#table(object, true);
    return [...t.columns.values()].map(({ name, type, required, identifier }) => ({ name, type, required, identifier }));
  }

  capabilities(): DestinationCapabilities {
    return TABLE_CAPABILITIES;
  }

  async write(req: WriteRequest): Promise<WriteResult> {
    const table = await this.#table(req.object, false);
    columnsOf(req, (f) => table.columns.has(f));
    const results: RowResult[] = new Array(req.rows.length);
    const idxs = rowsWithMatchValue(req, results);
    const { conn } = await acquire(this.#pool);
    let healthy = true;
    try {
      await conn.query('START TRANSACTION');
      const sp = savepoints(conn);
      for (const group of groupByShape(req, idxs)) {
        const cols = group.fields.map((f) => table.columns.get(f)!);
        const perStatement = Math.max(1, Math.floor(MAX_PARAMS / (cols.length + 1)));
        for (const part of chunks(group.idxs, perStatement)) {
          await isolate(sp, part, (rows) => this.#exec(conn, req, table, cols, rows), results);
        }
      }
      await conn.query('COMMIT');
    } catch (e) {
      await conn.query('ROLLBACK').catch(() => (healthy = false));
      throw mysqlError(e);
    } finally {
      if (healthy) conn.release();
      else conn.destroy();
    }
    return { results };
  }

  async close(): Promise<void> {
    await this.#pool.end();
  }

  async #exec(conn: mysql.PoolConnection, req: WriteRequest, table: TableInfo, cols: MyColumn[], idxs: number[]): Promise<Map<number, RowResult> | void> {
    const rel = `${q(this.#database)}.${q(req.object)}`;
    const match = table.columns.get(req.matchField)!;
    const params: (string | number | null)[] = [];
    const bind = (v: unknown, c: MyColumn) => {
      params.push(param(v, c));
      return '?';
    };
    const list = cols.map((c) => q(c.name)).join(', ');
    switch (req.operation) {
      case 'insert':
      case 'upsert': {
        const values = idxs.map((i) => `(${cols.map((c) => bind(req.rows[i].payload[c.name], c)).join(', ')})`).join(', ');
        let text = `INSERT INTO ${rel} (${list}) VALUES ${values}`;
        if (req.operation === 'upsert') {
          text += ` ON DUPLICATE KEY UPDATE ${cols.map((c) => `${q(c.name)} = VALUES(${q(c.name)})`).join(', ')}`;
        }
        await conn.query(text, params);
        return;
      }
      case 'update': {
        // A derived table of (ordinal, values…) joined on the match column: the ordinals that
        // join are the rows that exist; the others are not_found.
        const derived = (withValues: boolean) =>
          idxs
            .map((i, n) => {
              const row = req.rows[i].payload;
              const vals = withValues ? cols : [match];
              return `SELECT ${i}${n === 0 ? ' AS bh_ord' : ''}, ${vals.map((c) => `${bind(row[c.name], c)}${n === 0 ? ` AS ${q(c.name)}` : ''}`).join(', ')}`;
            })
            .join(' UNION ALL ');
        const [found] = await conn.query<mysql.RowDataPacket[]>(
          `SELECT v.bh_ord FROM (${derived(false)}) v JOIN ${rel} t ON t.${q(match.name)} = v.${q(match.name)} FOR UPDATE`,
          params.splice(0),
        );
        const set = cols.filter((c) => c.name !== match.name).map((c) => `t.${q(c.name)} = v.${q(c.name)}`);
        if (set.length) {
          await conn.query(`UPDATE ${rel} t JOIN (${derived(true)}) v ON t.${q(match.name)} = v.${q(match.name)} SET ${set.join(', ')}`, params);
        }
        const ok = new Set(found.map((x) => Number(x.bh_ord)));
        return new Map(idxs.filter((i) => !ok.has(i)).map((i) => [i, notFound(match.name, req.rows[i].payload[match.name])]));
      }
      case 'delete': {
        const ins = idxs.map((i) => bind(req.rows[i].payload[match.name], match)).join(', ');
        await conn.query(`DELETE FROM ${rel} WHERE ${q(match.name)} IN (${ins})`, params);
        return;
      }
    }
  }

  async #table(object: string, fresh: boolean): Promise<TableInfo> {
    const cached = this.#tables.get(object);
    if (cached && !fresh && Date.now() - cached.at < CACHE_MS) return cached;
    const { conn, flavour } = await acquire(this.#pool);
    try {
      const [cols] = await conn.query<mysql.RowDataPacket[]>(
        `SELECT COLUMN_NAME AS name, DATA_TYPE AS dataType, COLUMN_TYPE AS columnType, IS_NULLABLE AS nullable,
                COLUMN_DEFAULT AS dflt, EXTRA AS extra
           FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION`,
        [this.#database, object],
      );
      if (!cols.length) throw objectNotFound(object, `database "${this.#database}"`);
      const [uniq] = await conn.query<mysql.RowDataPacket[]>(
        `SELECT MIN(COLUMN_NAME) AS name FROM information_schema.STATISTICS
          WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND NON_UNIQUE = 0 GROUP BY INDEX_NAME HAVING COUNT(*) = 1`,
        [this.#database, object],
      );
      const identifiers = new Set(uniq.map((u) => String(u.name)));
      // MariaDB's JSON is LONGTEXT with a json_valid() check: find those checks.
      const jsonCols = new Set<string>();
      if (flavour.mariadb) {
        const [checks] = await conn.query<mysql.RowDataPacket[]>(
          `SELECT CHECK_CLAUSE AS c FROM information_schema.CHECK_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ?`,
          [this.#database, object],
        );
        for (const ch of checks) {
          const m = /^json_valid\(`((?:[^`]|``)+)`\)$/i.exec(String(ch.c));
          if (m) jsonCols.add(m[1].replace(/``/g, '`'));
        }
      }
      const columns = new Map<string, MyColumn>();
      for (const c of cols) {
        const extra = String(c.extra ?? '').toLowerCase();
        if (extra.includes('generated')) continue; // computed columns cannot be written
        const name = String(c.name);
        columns.set(name, {
          name,
          dataType: String(c.dataType),
          type: commonType(String(c.dataType).toLowerCase(), String(c.columnType).toLowerCase(), jsonCols.has(name)),
          required: c.nullable === 'NO' && (c.dflt === null || c.dflt === undefined) && !extra.includes('auto_increment'),
          identifier: identifiers.has(name),
        });
      }
      const info = { columns, at: Date.now() };
      this.#tables.set(object, info);
      return info;
    } catch (e) {
      throw mysqlError(e);
    } finally {
      conn.release();
    }
  }
}

export function openMysqlDestination(config: SqlDatabaseConfig, secrets: ResolvedSecrets, ctx?: { denyPrivateNetworks: boolean }): DestinationConnector {
  return new MysqlTableDestination(config, secrets, ctx);
}
