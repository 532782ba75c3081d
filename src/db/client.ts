import postgres from 'postgres';
import { drizzle, type PostgresJsDatabase } from 'drizzle-orm/postgres-js';
import * as schema from './schema.ts';

export type Sql = postgres.Sql;
export type Db = PostgresJsDatabase<typeof schema>;
/** A transaction or the pool: services accept either so callers can compose writes atomically. */
export type Tx = Parameters<Parameters<Db['transaction']>[0]>[0] | Db;

export interface Database {
  sql: Sql;
  db: Db;
  url: string;
  close(): Promise<void>;
}

export interface ConnectOptions {
  max?: number;
  onnotice?: (n: unknown) => void;
  /**
   * Called with every statement sent (tests count queries with it, e.g. GraphQL's N+1 check).
   * Note: postgres.js then also attaches the query and parameters to its errors; for tests only.
   */
  debug?: (query: string, parameters: unknown[]) => void;
}

export function connectDatabase(url: string, opts: ConnectOptions = {}): Database {
  const debug = opts.debug;
  const sql = postgres(url, {
    max: opts.max ?? 10,
    onnotice: opts.onnotice ?? (() => {}),
    ...(debug ? { debug: (_connection: number, query: string, parameters: unknown[]) => debug(query, parameters) } : {}),
    // Timestamps are returned as Date; int8 as string (the engine keeps counts in int4/numeric-safe ranges).
    connection: { application_name: 'backhaul' },
  });
  const db = drizzle(sql, { schema });
  return {
    sql,
    db,
    url,
    close: () => sql.end({ timeout: 5 }),
  };
}
