import type { ColumnType, DestinationCapabilities, DestinationConnector, DestinationField, DestinationObject, ResolvedSecrets, RowResult, WriteRequest, WriteResult } from '../types.ts';
import type { SqlDatabaseConfig } from '../sql-config.ts';
import { ConnectorError } from '../../errors.ts';
import { openPg, pgColumnType, quotePgIdent as q, type PgClient } from '../sources/pg-client.ts';
import { pgError } from '../sources/sql-errors.ts';
import { TABLE_CAPABILITIES, chunks, columnsOf, groupByShape, isolate, notFound, objectNotFound, rowsWithMatchValue, type Savepoints } from './table-common.ts';
import { stringifyJson } from '../../lib/json.ts';

type Reserved = Awaited<ReturnType<PgClient['reserve']>>;

interface PgColumn {
  name: string;
  /**
   * The column's type without modifiers, the explicit cast of every parameter. Without the
   * modifier, too long or too precise values are checked on assignment (and rejected) rather
   * than silently truncated by an explicit cast to varchar(n).
   */
  sqlType: string;
  type: ColumnType;
  category: string;
  required: boolean;
  identifier: boolean;
}

interface TableInfo {
  columns: Map<string, PgColumn>;
  at: number;
}

const CACHE_MS = 60_000;
// PostgreSQL allows 65535 bind parameters per statement; stay well below.
const MAX_PARAMS = 30_000;

/** PostgreSQL array literal for array columns (`{"a","b"}`), so JS arrays bind as text. */
function arrayLiteral(v: unknown[]): string {
  return `{${v
    .map((x) => (x === null || x === undefined ? 'NULL' : Array.isArray(x) ? arrayLiteral(x) : `"${String(typeof x === 'object' ? JSON.stringify(x) : x).replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`))
    .join(',')}}`;
}

function param(v: unknown, col: PgColumn): string | null {
  if (v === null || v === undefined) return null;
  if (col.type === 'json' && col.category !== 'A') return stringifyJson(v);
  if (Array.isArray(v) && col.category === 'A') return arrayLiteral(v);
  if (v instanceof Date) return v.toISOString();
  if (typeof v === 'object') return stringifyJson(v);
  return String(v);
}

const REJECTION_CODES: Record<string, string> = {
  '23505': 'duplicate',
  '23502': 'not_null_violation',
  '23514': 'check_violation',
  '23503': 'foreign_key_violation',
  '23P01': 'exclusion_violation',
};

const savepoints = (r: Reserved): Savepoints => ({
  savepoint: async () => void (await r.unsafe('savepoint bh_rows')),
  release: async () => void (await r.unsafe('release savepoint bh_rows')),
  rollback: async () => void (await r.unsafe('rollback to savepoint bh_rows')),
  isDataError: (e) => {
    const code = String((e as { code?: string }).code ?? '');
    return /^(21|22|23)/.test(code) || code === '42804' || code === '54000';
  },
  rejection: (e) => {
    const err = e as { code?: string; message?: string; detail?: string };
    const code = REJECTION_CODES[err.code ?? ''] ?? (err.code?.startsWith('22') ? 'invalid_value' : 'rejected');
    return { code, message: `${err.message ?? String(e)}${err.detail ? ` (${err.detail})` : ''}` };
  },
});

/**
 * A PostgreSQL schema as a destination: objects are its tables, fields their columns. Writes are
 * set-based statements in one transaction per batch; every value is a bind parameter cast to the
 * column's own type, so the database does the type checking and reports bad values per row.
 */
export class PostgresTableDestination implements DestinationConnector {
  readonly #sql: PgClient;
  readonly #schema: string;
  readonly #tables = new Map<string, TableInfo>();

  constructor(config: SqlDatabaseConfig, secrets: ResolvedSecrets, ctx: { denyPrivateNetworks: boolean } = { denyPrivateNetworks: false }) {
    this.#sql = openPg(config, secrets.password, 4, { denyPrivateNetworks: ctx.denyPrivateNetworks });
    this.#schema = config.schema ?? 'public';
  }

  async test(): Promise<void> {
    let found: unknown[];
    try {
      found = await this.#sql.unsafe('select 1 from pg_namespace where nspname = $1', [this.#schema]);
    } catch (e) {
      throw pgError(e);
    }
    if (!found.length) {
      throw new ConnectorError('schema_not_found', `Schema "${this.#schema}" does not exist.`, { classification: 'fatal', hint: 'Check the `schema` setting of the connection.' });
    }
  }

  async objects(): Promise<DestinationObject[]> {
    try {
      const rows = await this.#sql.unsafe<{ name: string }[]>(
        `select c.relname as name from pg_class c join pg_namespace n on n.oid = c.relnamespace
          where n.nspname = $1 and c.relkind in ('r', 'p') and has_table_privilege(c.oid, 'select') order by 1`,
        [this.#schema],
      );
      return rows.map((r) => ({ name: r.name }));
    } catch (e) {
      throw pgError(e);
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
    let r: Reserved;
    try {
      r = await this.#sql.reserve();
    } catch (e) {
      throw pgError(e);
    }
    try {
      await r.unsafe('begin');
      const sp = savepoints(r);
      for (const group of groupByShape(req, idxs)) {
        const cols = group.fields.map((f) => table.columns.get(f)!);
        const perStatement = Math.max(1, Math.floor(MAX_PARAMS / (cols.length + 1)));
        for (const part of chunks(group.idxs, perStatement)) {
          await isolate(sp, part, (rows) => this.#exec(r, req, table, cols, rows), results);
        }
      }
      await r.unsafe('commit');
    } catch (e) {
      await r.unsafe('rollback').catch(() => {});
      if ((e as { code?: string }).code === '42P10') {
        throw new ConnectorError('match_field_not_unique', `Column "${req.matchField}" of "${req.object}" has no unique index, so rows cannot be upserted by it.`, {
          classification: 'fatal',
          hint: 'Add a unique constraint on the match column, or choose a match field marked as identifier.',
        });
      }
      throw pgError(e);
    } finally {
      r.release();
    }
    return { results };
  }

  async close(): Promise<void> {
    await this.#sql.end({ timeout: 5 });
  }

  async #exec(r: Reserved, req: WriteRequest, table: TableInfo, cols: PgColumn[], idxs: number[]): Promise<Map<number, RowResult> | void> {
    const rel = `${q(this.#schema)}.${q(req.object)}`;
    const match = table.columns.get(req.matchField)!;
    const params: (string | null)[] = [];
    const bind = (v: unknown, c: PgColumn) => {
      params.push(param(v, c));
      // Bound as text, then cast: postgres.js never re-serialises by the server's inferred type.
      return `$${params.length}::text::${c.sqlType}`;
    };
    const list = cols.map((c) => q(c.name)).join(', ');
    switch (req.operation) {
      case 'insert':
      case 'upsert': {
        const values = idxs.map((i) => `(${cols.map((c) => bind(req.rows[i].payload[c.name], c)).join(', ')})`).join(', ');
        let text = `insert into ${rel} (${list}) values ${values}`;
        if (req.operation === 'upsert') {
          const set = cols.filter((c) => c.name !== match.name).map((c) => `${q(c.name)} = excluded.${q(c.name)}`);
          text += ` on conflict (${q(match.name)}) do ${set.length ? `update set ${set.join(', ')}` : 'nothing'}`;
        }
        await r.unsafe(text, params);
        return;
      }
      case 'update': {
        // RETURNING the row's ordinal tells which rows matched; the rest are not_found.
        const values = idxs.map((i) => `(${i}, ${cols.map((c) => bind(req.rows[i].payload[c.name], c)).join(', ')})`).join(', ');
        const v = `(values ${values}) as v(bh_ord, ${list})`;
        const set = cols.filter((c) => c.name !== match.name).map((c) => `${q(c.name)} = v.${q(c.name)}`);
        const text = set.length
          ? `update ${rel} as t set ${set.join(', ')} from ${v} where t.${q(match.name)} = v.${q(match.name)} returning v.bh_ord`
          : `select v.bh_ord from ${v} join ${rel} as t on t.${q(match.name)} = v.${q(match.name)}`;
        const found = new Set((await r.unsafe<{ bh_ord: number }[]>(text, params)).map((x) => Number(x.bh_ord)));
        return new Map(idxs.filter((i) => !found.has(i)).map((i) => [i, notFound(match.name, req.rows[i].payload[match.name])]));
      }
      case 'delete': {
        // Deleting a row that is already gone is a success: the destination holds what we want.
        const ins = idxs.map((i) => bind(req.rows[i].payload[match.name], match)).join(', ');
        await r.unsafe(`delete from ${rel} where ${q(match.name)} in (${ins})`, params);
        return;
      }
    }
  }

  async #table(object: string, fresh: boolean): Promise<TableInfo> {
    const cached = this.#tables.get(object);
    if (cached && !fresh && Date.now() - cached.at < CACHE_MS) return cached;
    let rows: { name: string; sql_type: string; oid: number; category: string; not_null: boolean; has_default: boolean; identifier: boolean }[];
    try {
      rows = await this.#sql.unsafe(
        `select a.attname as name, format_type(a.atttypid, null) as sql_type, a.atttypid::int as oid,
                t.typcategory as category, a.attnotnull as not_null,
                (a.atthasdef or a.attidentity <> '') as has_default,
                exists (select 1 from pg_index i where i.indrelid = c.oid and i.indisunique and i.indnkeyatts = 1
                          and i.indkey[0] = a.attnum and i.indpred is null) as identifier
           from pg_attribute a
           join pg_class c on c.oid = a.attrelid
           join pg_namespace n on n.oid = c.relnamespace
           join pg_type t on t.oid = a.atttypid
          where n.nspname = $1 and c.relname = $2 and c.relkind in ('r', 'p')
            and a.attnum > 0 and not a.attisdropped and a.attgenerated = ''
          order by a.attnum`,
        [this.#schema, object],
      );
    } catch (e) {
      throw pgError(e);
    }
    if (!rows.length) throw objectNotFound(object, `schema "${this.#schema}"`);
    const columns = new Map<string, PgColumn>(
      rows.map((c) => [
        c.name,
        {
          name: c.name,
          sqlType: c.sql_type,
          type: pgColumnType(Number(c.oid), c.category),
          category: c.category,
          required: c.not_null && !c.has_default,
          identifier: c.identifier,
        },
      ]),
    );
    const info = { columns, at: Date.now() };
    this.#tables.set(object, info);
    return info;
  }
}

export function openPostgresDestination(config: SqlDatabaseConfig, secrets: ResolvedSecrets, ctx?: { denyPrivateNetworks: boolean }): DestinationConnector {
  return new PostgresTableDestination(config, secrets, ctx);
}
