import mysql from 'mysql2/promise';
import { guardedSocket } from '../../lib/address-guard.ts';
import { parseJson } from '../../lib/json.ts';
import type { SqlDatabaseConfig } from '../sql-config.ts';
import type { Column, ColumnType } from '../types.ts';
import { mysqlError } from './sql-errors.ts';

// One mysql2 pool factory for the source and the table destination. Values come back the
// same way as from PostgreSQL: BIGINT as number only while exact (else string), DECIMAL as
// string, DATE as 'YYYY-MM-DD', DATETIME/TIMESTAMP as ISO-8601 UTC (the session runs in UTC;
// DATETIME has no zone and is read as UTC), tinyint(1) as boolean, JSON parsed losslessly
// (src/lib/json.ts; MariaDB's JSON alias is recognised through its extended metadata).

type CastField = { type: string; length: number; extendedFormat?: string; string(encoding?: string): string | null };

function typeCast(field: CastField, next: () => unknown): unknown {
  if (field.type === 'JSON' || field.extendedFormat === 'json') {
    const v = field.string('utf8');
    return v === null ? null : parseJson(v);
  }
  switch (field.type) {
    case 'TINY':
      if (field.length === 1) {
        const v = field.string();
        return v === null ? null : v !== '0';
      }
      return next();
    case 'DATE':
    case 'NEWDATE': {
      const v = field.string();
      return v === null || v.startsWith('0000-') ? null : v;
    }
    case 'DATETIME':
    case 'TIMESTAMP': {
      const v = field.string();
      return v === null || v.startsWith('0000-') ? null : `${v.replace(' ', 'T')}Z`;
    }
  }
  return next();
}

/** Connection options shared by pools and single connections: sockets go through the address guard. */
export function mysqlOptions(config: SqlDatabaseConfig, password: string | undefined, denyPrivateNetworks = false): mysql.ConnectionOptions {
  const port = config.port ?? 3306;
  return {
    host: config.host,
    port,
    user: config.user,
    password: password ?? '',
    database: config.database,
    ssl: config.ssl === 'require' ? { rejectUnauthorized: false } : config.ssl === 'verify-full' ? { rejectUnauthorized: true } : undefined,
    // Resolved, checked, and connected to the checked address (TLS servername stays config.host).
    // TCP keepalive after 5 s idle (then 10 probes 1 s apart): a vanished peer is noticed in ~15 s.
    stream: () => guardedSocket({ host: config.host, port, denyPrivateNetworks }).setNoDelay(true).setKeepAlive(true, 5000),
    connectTimeout: 10_000,
    supportBigNumbers: true,
    bigNumberStrings: false,
    decimalNumbers: false,
    dateStrings: true,
    multipleStatements: false,
    charset: 'utf8mb4',
    typeCast: typeCast as never,
  };
}

export function openMysql(config: SqlDatabaseConfig, password: string | undefined, max: number, opts: { denyPrivateNetworks?: boolean } = {}): mysql.Pool {
  return mysql.createPool({
    ...mysqlOptions(config, password, opts.denyPrivateNetworks),
    connectionLimit: max,
    maxIdle: max,
    idleTimeout: 30_000,
  });
}

export interface MysqlFlavour {
  mariadb: boolean;
}

/** Acquires a connection set up for Backhaul: UTC session, optional statement timeout. */
export async function acquire(pool: mysql.Pool, timeoutMs?: number): Promise<{ conn: mysql.PoolConnection; flavour: MysqlFlavour }> {
  let conn: mysql.PoolConnection;
  try {
    conn = await pool.getConnection();
  } catch (e) {
    throw mysqlError(e);
  }
  try {
    const [rows] = await conn.query<mysql.RowDataPacket[]>('SELECT VERSION() AS v');
    const flavour = { mariadb: /mariadb/i.test(String(rows[0]?.v)) };
    const sets = [`time_zone = '+00:00'`];
    if (timeoutMs !== undefined) {
      // MariaDB: max_statement_time in seconds (any statement); MySQL: max_execution_time in ms (SELECT).
      sets.push(flavour.mariadb ? `max_statement_time = ${(Math.max(1, timeoutMs) / 1000).toFixed(3)}` : `max_execution_time = ${Math.max(1, Math.floor(timeoutMs))}`);
    } else {
      sets.push(flavour.mariadb ? 'max_statement_time = 0' : 'max_execution_time = 0');
    }
    await conn.query(`SET SESSION ${sets.join(', ')}`);
    return { conn, flavour };
  } catch (e) {
    conn.destroy();
    throw mysqlError(e);
  }
}

const NATIVE: Record<number, [string, ColumnType]> = {
  0: ['decimal', 'decimal'], 1: ['tinyint', 'integer'], 2: ['smallint', 'integer'], 3: ['int', 'integer'],
  4: ['float', 'decimal'], 5: ['double', 'decimal'], 6: ['null', 'string'], 7: ['timestamp', 'timestamp'],
  8: ['bigint', 'integer'], 9: ['mediumint', 'integer'], 10: ['date', 'date'], 11: ['time', 'string'],
  12: ['datetime', 'timestamp'], 13: ['year', 'integer'], 14: ['date', 'date'], 15: ['varchar', 'string'],
  16: ['bit', 'string'], 245: ['json', 'json'], 246: ['decimal', 'decimal'], 247: ['enum', 'string'],
  248: ['set', 'string'], 249: ['tinyblob', 'string'], 250: ['mediumblob', 'string'], 251: ['longblob', 'string'],
  252: ['blob', 'string'], 253: ['varchar', 'string'], 254: ['char', 'string'], 255: ['geometry', 'string'],
};

/** Common column from a mysql2 field definition. */
export function mysqlColumn(f: { name: string; columnType?: number; type?: number; columnLength?: number; length?: number; extendedFormat?: string; extendedTypeName?: string; characterSet?: number }): Column {
  const code = f.columnType ?? f.type ?? 253;
  if (f.extendedFormat === 'json') return { name: f.name, type: 'json', nativeType: 'json' };
  const [native, type] = NATIVE[code] ?? ['unknown', 'string'];
  const len = f.columnLength ?? f.length;
  if (code === 1 && len === 1) return { name: f.name, type: 'boolean', nativeType: 'tinyint(1)' };
  // BLOB type codes carry TEXT columns too; charset 63 means binary.
  const display = code >= 249 && code <= 252 && f.characterSet !== 63 ? native.replace('blob', 'text') : native;
  return { name: f.name, type, nativeType: f.extendedTypeName ?? display };
}

export function quoteMysqlIdent(name: string): string {
  return `\`${name.replace(/`/g, '``')}\``;
}
