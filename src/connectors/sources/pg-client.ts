import postgres from 'postgres';
import type { SqlDatabaseConfig } from '../sql-config.ts';
import type { ColumnType } from '../types.ts';

// One postgres.js client factory for the source and the table destination, so both read and
// write values the same way: int8 as number only while exact, numeric as string, dates as
// 'YYYY-MM-DD', timestamps as ISO-8601 UTC strings (the session runs in UTC).

const toIsoUtc = (x: string): string => {
  if (x === 'infinity' || x === '-infinity') return x;
  // '2024-01-02 03:04:05.123456+00' (timestamptz in a UTC session) or without offset (timestamp).
  const m = /^(\d{4,}-\d\d-\d\d) (\d\d:\d\d:\d\d(?:\.\d+)?)(\+00(?::00)?)?$/.exec(x);
  if (m) return `${m[1]}T${m[2]}Z`;
  const d = new Date(x);
  return Number.isNaN(d.getTime()) ? x : d.toISOString();
};

const serializeTemporal = (x: unknown): string => (x instanceof Date ? x.toISOString() : String(x));

export const PG_TYPES = {
  bhInt8: {
    to: 20,
    from: [20],
    serialize: (x: unknown) => String(x),
    parse: (x: string) => {
      const n = Number(x);
      return Number.isSafeInteger(n) ? n : x;
    },
  },
  bhDate: { to: 1082, from: [1082], serialize: (x: unknown) => (x instanceof Date ? x.toISOString().slice(0, 10) : String(x)), parse: (x: string) => x },
  bhTimestamp: { to: 1184, from: [1114, 1184], serialize: serializeTemporal, parse: toIsoUtc },
};

export type PgClient = postgres.Sql<Record<string, never>>;

export function openPg(config: SqlDatabaseConfig, password: string | undefined, max: number): PgClient {
  return postgres({
    host: config.host,
    port: config.port ?? 5432,
    database: config.database,
    username: config.user,
    password: password ?? undefined,
    ssl: config.ssl === 'require' ? 'require' : config.ssl === 'verify-full' ? 'verify-full' : false,
    max,
    idle_timeout: 30,
    connect_timeout: 10,
    // Arbitrary user SQL: no named prepared statements (also keeps PgBouncer in transaction mode working).
    prepare: false,
    onnotice: () => {},
    connection: { TimeZone: 'UTC', application_name: 'backhaul' },
    types: PG_TYPES,
  }) as unknown as PgClient;
}

/** Common type of a PostgreSQL type, from its oid and pg_type category. */
export function pgColumnType(oid: number, category?: string): ColumnType {
  switch (oid) {
    case 20: case 21: case 23: case 26:
      return 'integer';
    case 700: case 701: case 1700:
      return 'decimal';
    case 16:
      return 'boolean';
    case 1114: case 1184:
      return 'timestamp';
    case 1082:
      return 'date';
    case 114: case 3802:
      return 'json';
  }
  if (category === 'A') return 'json';
  return 'string';
}

export function quotePgIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}
