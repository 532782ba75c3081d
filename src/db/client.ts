import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import postgres from 'postgres';
import { drizzle, type PostgresJsDatabase } from 'drizzle-orm/postgres-js';
import * as schema from './schema.ts';
import { ConnectorError } from '../errors.ts';

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
    // A database that does not answer a new connection is reported as unavailable within 10 s
    // (postgres.js waits 30 s by default), so API requests fail with 503 instead of hanging.
    connect_timeout: 10,
    // Reconnect delay after a lost connection, in seconds: 0.1 doubling to 2 (postgres.js's own
    // grows to 20 s, and every query queued meanwhile waits for it — an API request included).
    backoff: (retries: number) => (0.5 + Math.random() / 2) * Math.min(0.1 * 2 ** retries, 2),
  });
  const db = drizzle(sql, { schema });
  return {
    sql,
    db,
    url,
    close: () => sql.end({ timeout: 5 }),
  };
}

/**
 * Errors that mean "the control database cannot be reached right now" (it restarted, failed
 * over, or the network between us dropped), as opposed to an error in a statement: socket
 * errors, postgres.js's and node-postgres's connection errors, and the SQLSTATEs PostgreSQL
 * sends when it shuts a session down or does not accept connections yet (class 08 connection
 * exception; 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now — PostgreSQL
 * documentation, Appendix A "PostgreSQL Error Codes"). Follows `cause` (drizzle wraps driver
 * errors in DrizzleQueryError). Such an error is transient: retry once the database is back.
 */
export function isConnectionError(e: unknown): boolean {
  for (let x = e, depth = 0; x && typeof x === 'object' && depth < 5; x = (x as { cause?: unknown }).cause, depth++) {
    // A connector's error (a source, a destination, a lookup) is about that remote, even when its
    // cause is the same socket error: the control database is fine, and waiting for it would
    // re-run the remote call forever instead of failing the run (source_unavailable).
    if (x instanceof ConnectorError) return false;
    const code = (x as { code?: unknown }).code;
    if (typeof code === 'string') {
      // Class 08 but 08P01 protocol_violation (a client defect, not a transient outage).
      if (CONNECTION_CODES.has(code) || (code.startsWith('08') && code !== '08P01')) return true;
    }
    const message = (x as { message?: unknown }).message;
    // node-postgres (graphile-worker's pool) reports a dropped session by message only.
    if (typeof message === 'string' && /^(Connection terminated( unexpectedly| due to connection timeout)?|Client has encountered a connection error and is not queryable)$/.test(message)) return true;
  }
  return false;
}

/** One short line for a log: the error's code and message (not the query or the client object it may carry). */
export function errorSummary(e: unknown): string {
  const code = (e as { code?: unknown })?.code;
  const message = (e as { cause?: { message?: unknown } })?.cause?.message ?? (e as { message?: unknown })?.message ?? String(e);
  return typeof code === 'string' && !String(message).includes(code) ? `${code}: ${String(message)}` : String(message).slice(0, 300);
}

/**
 * A connection error from a PostgreSQL client, as opposed to the same socket error from anything
 * else (a destination, a source being tested): what the API reports as `database_unavailable`.
 * postgres.js's own codes (CONNECTION_CLOSED…) and PostgreSQL's SQLSTATEs come from a database;
 * a socket error does when the client attached its statement to it (`query`, as postgres.js and
 * drizzle do).
 */
export function isDatabaseConnectionError(e: unknown): boolean {
  if (!isConnectionError(e)) return false;
  for (let x = e, depth = 0; x && typeof x === 'object' && depth < 5; x = (x as { cause?: unknown }).cause, depth++) {
    // A connector's error (a source, a destination, a lookup) is about that remote, even when its
    // cause is the same socket error: the control database is fine, and waiting for it would
    // re-run the remote call forever instead of failing the run (source_unavailable).
    if (x instanceof ConnectorError) return false;
    const code = (x as { code?: unknown }).code;
    if ('query' in x || (typeof code === 'string' && (DATABASE_CODES.has(code) || /^(08|57P0)/.test(code)))) return true;
  }
  return false;
}

const DATABASE_CODES = new Set(['CONNECTION_CLOSED', 'CONNECTION_DESTROYED', 'CONNECT_TIMEOUT']);

const CONNECTION_CODES = new Set([
  // sockets (Node's net / libuv)
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'EAI_AGAIN',
  // postgres.js (src/errors.js: Errors.connection)
  'CONNECTION_CLOSED',
  'CONNECTION_DESTROYED',
  'CONNECT_TIMEOUT',
  // PostgreSQL: the server ended the session or does not accept connections yet
  '57P01',
  '57P02',
  '57P03',
]);

/**
 * Whether the installed postgres.js carries the connection-loss guards that
 * scripts/patch-postgres.mjs adds at `npm install` (without them, a connection lost during a
 * transaction throws an uncaught TypeError from a timer and ends the process).
 */
export function postgresGuarded(): boolean {
  try {
    const file = fileURLToPath(new URL('./connection.js', import.meta.resolve('postgres')));
    return readFileSync(file, 'utf8').includes('/* backhaul-guard */');
  } catch {
    return false;
  }
}
