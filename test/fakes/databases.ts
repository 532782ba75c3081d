// Test helpers for the connector tests: real PostgreSQL and MariaDB, one uniquely named
// schema/database per test file so parallel files never collide.
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import postgres from 'postgres';
import mysql from 'mysql2/promise';
import type { Test } from 'tap';
import type { SqlDatabaseConfig } from '../../src/connectors/sql-config.ts';

export const uniqueName = (prefix = 'bh_conn') => `${prefix}_${randomBytes(5).toString('hex')}`;

export function pgConfig(overrides: Partial<SqlDatabaseConfig> = {}): { config: SqlDatabaseConfig; password?: string } {
  const url = new URL(process.env.TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres');
  return {
    config: {
      host: url.hostname,
      port: Number(url.port || 5432),
      database: decodeURIComponent(url.pathname.slice(1) || 'postgres'),
      user: decodeURIComponent(url.username || 'postgres'),
      ssl: 'disable',
      statementTimeoutMs: 30_000,
      ...overrides,
    },
    password: url.password ? decodeURIComponent(url.password) : undefined,
  };
}

export function pgAdmin(): postgres.Sql {
  const { config, password } = pgConfig();
  return postgres({ host: config.host, port: config.port, database: config.database, username: config.user, password, max: 2, onnotice: () => {} });
}

export function mysqlConfig(overrides: Partial<SqlDatabaseConfig> = {}): SqlDatabaseConfig {
  return { host: '127.0.0.1', port: 3306, database: 'test', user: 'root', ssl: 'disable', statementTimeoutMs: 30_000, ...overrides };
}

export async function mysqlAdmin(): Promise<mysql.Connection | undefined> {
  try {
    return await mysql.createConnection({ host: '127.0.0.1', port: 3306, user: 'root', password: '', multipleStatements: true, connectTimeout: 3000 });
  } catch {
    return undefined;
  }
}

/** A TCP port nothing listens on. */
export async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise((r) => srv.close(r));
  return port;
}

export async function expectCode(t: Test, p: Promise<unknown> | (() => Promise<unknown>), code: string, msg?: string): Promise<Error & { code?: string; classification?: string; hint?: string }> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    const err = e as Error & { code?: string; classification?: string; hint?: string };
    t.equal(err.code, code, msg ?? `fails with ${code}: ${err.message}`);
    return err;
  }
  t.fail(msg ?? `expected a ${code} error`);
  return new Error('no error');
}

/** Drains an async iterable of batches into an array. */
export async function collect<T>(it: AsyncIterable<T[]>): Promise<T[][]> {
  const out: T[][] = [];
  for await (const b of it) out.push(b);
  return out;
}
