import mysql from 'mysql2/promise';
import type { Connection as CallbackConnection, FieldPacket } from 'mysql2';
import { FINGERPRINT_COLUMN, FingerprintUnsupported, type Column, type ConnectionTestReport, type ConnectionWarning, type ConnectorContext, type FingerprintOptions, type FingerprintSession, type PreviewResult, type ResolvedSecrets, type Row, type SourceConnector, type StreamOptions } from '../types.ts';
import type { SqlDatabaseConfig } from '../sql-config.ts';
import { ConnectorError } from '../../errors.ts';
import { mysqlColumn, mysqlOptions, quoteMysqlIdent } from './mysql-client.ts';
import { mysqlError } from './sql-errors.ts';
import { DEFAULT_STATEMENT_TIMEOUT_MS, PREVIEW_TIMEOUT_MS, cancelled, prepareModelSql } from './read-only.ts';
import { CANCEL_TIMEOUT_MS, CONTROL_TIMEOUT_MS, DATA_GRACE_MS, DeadlineExceeded, bounded, duringSession } from './bounded.ts';
import { PreviewCollector } from './preview-bounds.ts';

type ColumnDef = Parameters<typeof mysqlColumn>[0];

/**
 * One connection for one operation. The session is read-only (`SET SESSION TRANSACTION READ
 * ONLY`: every later transaction, and DDL, is refused by the server) with a statement timeout
 * and UTC. Every await (`run`) fails as soon as the connection fails or closes (a `KILL <id>`,
 * a reset), or its deadline passes, so nothing waits on a dead connection.
 */
class MySession {
  readonly conn: mysql.Connection;
  readonly core: CallbackConnection;
  readonly threadId: number;
  #closed = false;
  #lost: unknown;
  // Waiters to fail when the connection goes (a listener set, not a shared never-settling
  // promise: Promise.race against one would keep every batch it ever raced alive).
  readonly #waiters = new Set<(e: unknown) => void>();

  private constructor(conn: mysql.Connection) {
    this.conn = conn;
    this.core = (conn as unknown as { connection: CallbackConnection }).connection;
    this.threadId = (this.core as unknown as { threadId: number }).threadId;
    const gone = (e?: unknown) => {
      if (this.#lost) return;
      this.#lost = e ?? Object.assign(new Error('The connection to the database was closed.'), { code: 'PROTOCOL_CONNECTION_LOST' });
      for (const w of this.#waiters) w(this.#lost);
      this.#waiters.clear();
    };
    this.core.on('error', gone);
    this.core.on('end', () => gone());
    (this.core as unknown as { stream: NodeJS.EventEmitter }).stream.once('close', () => gone());
  }

  static async open(options: mysql.ConnectionOptions, statementTimeoutMs: number, signal?: AbortSignal, connectMs = CONTROL_TIMEOUT_MS): Promise<MySession> {
    let abandoned = false;
    const connecting = mysql.createConnection(options);
    connecting.then((c) => abandoned && c.destroy(), () => {});
    let conn: mysql.Connection;
    try {
      conn = await bounded(connecting, connectMs, 'connecting', signal);
    } catch (e) {
      abandoned = true;
      throw e;
    }
    const s = new MySession(conn);
    try {
      const [rows] = await s.run(conn.query<mysql.RowDataPacket[]>('SELECT VERSION() AS v'), CONTROL_TIMEOUT_MS, 'reading the server version', signal);
      const mariadb = /mariadb/i.test(String(rows[0]?.v));
      const ms = Math.max(1, Math.floor(statementTimeoutMs));
      // MariaDB: max_statement_time in seconds (any statement); MySQL: max_execution_time in ms (SELECT).
      const timeout = mariadb ? `max_statement_time = ${(ms / 1000).toFixed(3)}` : `max_execution_time = ${ms}`;
      await s.run(conn.query(`SET SESSION time_zone = '+00:00', ${timeout}`), CONTROL_TIMEOUT_MS, 'setting up the session', signal);
      await s.run(conn.query('SET SESSION TRANSACTION READ ONLY'), CONTROL_TIMEOUT_MS, 'making the session read-only', signal);
      return s;
    } catch (e) {
      s.destroy();
      throw e;
    }
  }

  /** Awaits `p`, failing early if the connection is lost, the deadline passes or `signal` aborts. */
  run<T>(p: Promise<T>, ms: number, what: string, signal?: AbortSignal): Promise<T> {
    p.catch(() => {});
    if (this.#lost) return Promise.reject(this.#lost);
    let fail!: (e: unknown) => void;
    const watched = new Promise<T>((resolve, reject) => {
      fail = reject;
      p.then(resolve, reject);
    });
    this.#waiters.add(fail);
    return bounded(watched, ms, what, signal).finally(() => this.#waiters.delete(fail));
  }

  destroy(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.conn.destroy();
  }

  async end(): Promise<void> {
    if (this.#closed) return;
    try {
      await this.run(this.conn.end(), CONTROL_TIMEOUT_MS, 'closing the connection');
    } catch {
      // destroyed below
    } finally {
      this.destroy();
    }
  }
}

/**
 * Reads a streaming query's rows in batches: the socket is paused while a full batch waits for
 * its consumer, so memory stays at about one batch.
 */
class RowPump {
  #batch: Row[] = [];
  #done = false;
  #error: unknown;
  #wake: (() => void) | undefined;
  readonly #core: CallbackConnection;
  readonly #size: number;

  constructor(core: CallbackConnection, sql: string, size: number, onFields?: (fields: ColumnDef[]) => void) {
    this.#core = core;
    this.#size = size;
    const query = core.query(sql);
    if (onFields) query.on('fields', (f: FieldPacket[]) => onFields(f as unknown as ColumnDef[]));
    query.on('result', (row: unknown) => {
      this.#batch.push(row as Row);
      if (this.#batch.length >= this.#size) {
        core.pause();
        this.#notify();
      }
    });
    query.on('error', (e: unknown) => {
      this.#error = e;
      this.#notify();
    });
    query.on('end', () => {
      this.#done = true;
      this.#notify();
    });
  }

  #notify() {
    const w = this.#wake;
    this.#wake = undefined;
    w?.();
  }

  /** The next batch (undefined at the end); rejects with the query's error. */
  async next(): Promise<Row[] | undefined> {
    for (;;) {
      if (this.#error) throw this.#error;
      if (this.#batch.length >= this.#size || (this.#done && this.#batch.length)) {
        const out = this.#batch;
        this.#batch = [];
        this.#core.resume();
        return out;
      }
      if (this.#done) return undefined;
      await new Promise<void>((r) => (this.#wake = r));
    }
  }
}

/**
 * MySQL / MariaDB model source. Each operation gets its own read-only session; model queries run
 * in `START TRANSACTION READ ONLY` with a session statement timeout, and rows are streamed from
 * the server (the socket is paused while a batch waits), so memory stays flat. A connection whose
 * result was not read to the end, or that failed, is destroyed, never reused.
 */
export class MysqlSource implements SourceConnector {
  readonly #config: SqlDatabaseConfig;
  readonly #password: string | undefined;
  readonly #deny: boolean;
  readonly #timeoutMs: number;
  readonly #sessions = new Set<MySession>();

  constructor(config: SqlDatabaseConfig, secrets: ResolvedSecrets, ctx: ConnectorContext = { denyPrivateNetworks: false }) {
    this.#config = config;
    this.#password = secrets.password;
    this.#deny = ctx.denyPrivateNetworks;
    this.#timeoutMs = config.statementTimeoutMs ?? DEFAULT_STATEMENT_TIMEOUT_MS;
  }

  async test(): Promise<ConnectionTestReport> {
    let s: MySession;
    try {
      s = await this.#open(CONTROL_TIMEOUT_MS);
    } catch (e) {
      if (e instanceof DeadlineExceeded) {
        throw new ConnectorError('connection_timeout', `Connecting to the database timed out (${e.message}).`, {
          classification: 'retryable',
          hint: 'Check that a firewall or security group allows the Backhaul server to reach the database port.',
        });
      }
      throw mysqlError(e);
    }
    // Warnings are advice: grants that cannot be read give none.
    let lines: string[] = [];
    try {
      const [grants] = await s.run(s.conn.query<mysql.RowDataPacket[]>('SHOW GRANTS FOR CURRENT_USER()'), CONTROL_TIMEOUT_MS, 'reading the grants');
      lines = grants.map((r) => String(Object.values(r)[0]));
      await this.#close(s);
    } catch {
      this.#drop(s);
    }
    const warnings = grantWarnings(lines);
    return warnings.length ? { warnings } : {};
  }

  async columns(sql: string): Promise<Column[]> {
    const q = prepareModelSql(sql, 'mysql');
    return this.#once(this.#timeoutMs, undefined, async (s) => {
      // Preparing a statement returns its column definitions without executing it.
      const stmt = (await s.run(s.conn.prepare(q), this.#timeoutMs + DATA_GRACE_MS, 'describing the query')) as unknown as {
        statement: { columns?: ColumnDef[] };
        close(): Promise<void>;
      };
      const cols = (stmt.statement.columns ?? []).map(mysqlColumn);
      await s.run(Promise.resolve(stmt.close()), CONTROL_TIMEOUT_MS, 'closing the statement');
      return cols;
    });
  }

  async preview(sql: string, limit: number, opts: { timeoutMs?: number } = {}): Promise<PreviewResult> {
    const q = prepareModelSql(sql, 'mysql');
    const n = Math.max(0, Math.min(Math.floor(limit), 10_000));
    const timeoutMs = opts.timeoutMs ?? Math.min(PREVIEW_TIMEOUT_MS, this.#timeoutMs);
    const s = await this.#open(timeoutMs);
    let clean = false;
    try {
      await s.run(s.conn.query('START TRANSACTION READ ONLY'), CONTROL_TIMEOUT_MS, 'starting a read-only transaction');
      let columns: Column[] = [];
      const out = new PreviewCollector();
      // One row at a time: a row is the most the driver holds (bounded by max_allowed_packet).
      const pump = new RowPump(s.core, q, 1, (f) => (columns = f.map(mysqlColumn)));
      let read = 0;
      for (;;) {
        const batch = await s.run(pump.next(), timeoutMs + DATA_GRACE_MS, 'reading preview rows');
        if (!batch) {
          clean = true;
          break;
        }
        if (read >= n) break; // the query has more rows than asked for
        read++;
        if (!out.add(batch[0])) break;
      }
      return out.result(columns);
    } catch (e) {
      throw duringSession(e, mysqlError);
    } finally {
      if (clean) await this.#close(s);
      else this.#drop(s);
    }
  }

  async *stream(sql: string, opts: StreamOptions = {}): AsyncIterable<Row[]> {
    const q = prepareModelSql(sql, 'mysql');
    const batchSize = Math.max(1, opts.batchSize ?? 1000);
    const { signal } = opts;
    if (signal?.aborted) throw cancelled();
    let s: MySession | undefined;
    let clean = false;
    let started = false;
    try {
      s = await this.#open(this.#timeoutMs, signal);
      await s.run(s.conn.query('START TRANSACTION READ ONLY'), CONTROL_TIMEOUT_MS, 'starting a read-only transaction', signal);
      const fp = opts.fingerprint && myFingerprint(opts.fingerprint.columns);
      const pump = new RowPump(s.core, fp ? `SELECT bh_row.*, ${fp} AS ${FINGERPRINT_COLUMN} FROM (${q}\n) AS bh_row` : q, batchSize);
      started = true;
      for (;;) {
        const batch = await s.run(pump.next(), this.#timeoutMs + DATA_GRACE_MS, 'reading rows', signal);
        if (!batch) break;
        yield batch;
        if (signal?.aborted) throw cancelled();
      }
      clean = true;
    } catch (e) {
      const aborted = signal?.aborted || (e instanceof ConnectorError && e.code === 'cancelled');
      // Stop the server-side work too: a dropped connection alone leaves the query running
      // until it next writes to the socket.
      if (s && started && (aborted || e instanceof DeadlineExceeded)) await this.#killQuery(s.threadId);
      if (aborted) throw cancelled();
      throw duringSession(e, mysqlError);
    } finally {
      if (s) {
        if (clean) await this.#close(s);
        else this.#drop(s);
      }
    }
  }

  fingerprintMethod(columns: Column[]): string | undefined {
    return myFingerprint(columns) ? MY_FP_METHOD : undefined;
  }

  async fingerprints(sql: string, opts: FingerprintOptions): Promise<FingerprintSession | undefined> {
    const q = prepareModelSql(sql, 'mysql');
    const pk = opts.columns.find((c) => c.name === opts.primaryKey);
    const fp = myFingerprint(opts.columns);
    if (!pk || !fp || !(pk.type === 'integer' || pk.type === 'string') || /binary|blob/i.test(pk.nativeType)) return undefined;
    const { signal } = opts;
    let s: MySession | undefined;
    try {
      s = await this.#open(this.#timeoutMs, signal);
      // One snapshot for the key scan and every fetch: the rows fetched are the rows fingerprinted.
      await s.run(s.conn.query('START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY'), CONTROL_TIMEOUT_MS, 'starting a read-only transaction', signal);
    } catch (e) {
      if (s) this.#drop(s);
      throw duringSession(e, mysqlError);
    }
    const session = s;
    const pkCol = quoteMysqlIdent(pk.name);
    const from = `FROM (${q}\n) AS bh_row`;
    const dataMs = this.#timeoutMs + DATA_GRACE_MS;
    const integerKey = pk.type === 'integer';
    let broken = false;
    const fail = async (e: unknown, started: boolean, sig?: AbortSignal) => {
      broken = true;
      const aborted = sig?.aborted || (e instanceof ConnectorError && e.code === 'cancelled');
      if (started && (aborted || e instanceof DeadlineExceeded)) await this.#killQuery(session.threadId);
      this.#drop(session);
      if (e instanceof FingerprintUnsupported) return e;
      return aborted ? cancelled() : duringSession(e, mysqlError);
    };
    return {
      method: MY_FP_METHOD,
      keys: async function* (this: void, prefix: string, sig?: AbortSignal) {
        if (!/^[0-9a-z]*:?$/.test(prefix)) throw new Error(`fingerprint prefix ${JSON.stringify(prefix)}`);
        const pump = new RowPump(session.core, `SELECT bh_row.${pkCol} AS k, CONCAT('${prefix}', ${fp}) AS f ${from}`, 5000);
        try {
          for (;;) {
            const batch = await session.run(pump.next(), dataMs, 'reading keys', sig);
            if (!batch) break;
            let out = '';
            for (const row of batch) {
              const k = row.k;
              if (k === null || k === undefined) out += `\\N\t${row.f}\n`;
              else if (typeof k === 'number' || typeof k === 'bigint' || (typeof k === 'string' && !k.includes('\0'))) out += `${copyText(String(k))}\t${row.f}\n`;
              else throw new FingerprintUnsupported(`primary key of type ${typeof k}`);
            }
            yield out;
            if (sig?.aborted) throw cancelled();
          }
        } catch (e) {
          throw await fail(e, true, sig);
        }
      },
      fetch: async (keys: string[], sig?: AbortSignal) => {
        if (broken) throw new ConnectorError('source_unavailable', 'The connection to the source was lost.', { classification: 'retryable' });
        if (!keys.length) return [];
        // Integer keys go as numbers while exact (an index compares them without conversion).
        const values = integerKey ? keys.map((k) => (Number.isSafeInteger(Number(k)) ? Number(k) : k)) : keys;
        try {
          const [rows] = await session.run(
            session.conn.query<mysql.RowDataPacket[]>(`SELECT bh_row.*, ${fp} AS ${FINGERPRINT_COLUMN} ${from} WHERE bh_row.${pkCol} IN (?)`, [values]),
            dataMs,
            'reading rows',
            sig,
          );
          return rows as Row[];
        } catch (e) {
          throw await fail(e, true, sig);
        }
      },
      close: async () => {
        if (broken) return;
        broken = true;
        await this.#close(session);
      },
    };
  }

  async close(): Promise<void> {
    for (const s of this.#sessions) this.#drop(s);
  }

  /** KILL QUERY from a second connection (a user may kill its own threads), best effort and bounded. */
  async #killQuery(threadId: number): Promise<void> {
    let killer: MySession | undefined;
    try {
      killer = await MySession.open(mysqlOptions(this.#config, this.#password, this.#deny), CANCEL_TIMEOUT_MS, undefined, CANCEL_TIMEOUT_MS);
      await killer.run(killer.conn.query(`KILL QUERY ${Number(threadId)}`), CANCEL_TIMEOUT_MS, 'cancelling the query');
    } catch {
      // the connection is dropped anyway
    } finally {
      killer?.destroy();
    }
  }

  async #open(statementTimeoutMs: number, signal?: AbortSignal): Promise<MySession> {
    const s = await MySession.open(mysqlOptions(this.#config, this.#password, this.#deny), statementTimeoutMs, signal).catch((e: unknown) => {
      throw e instanceof ConnectorError || e instanceof DeadlineExceeded ? e : mysqlError(e);
    });
    this.#sessions.add(s);
    return s;
  }

  async #close(s: MySession): Promise<void> {
    this.#sessions.delete(s);
    await s.end();
  }

  #drop(s: MySession): void {
    this.#sessions.delete(s);
    s.destroy();
  }

  async #once<T>(timeoutMs: number, signal: AbortSignal | undefined, fn: (s: MySession) => Promise<T>): Promise<T> {
    let s: MySession | undefined;
    try {
      s = await this.#open(timeoutMs, signal);
      const out = await fn(s);
      await this.#close(s);
      return out;
    } catch (e) {
      if (s) this.#drop(s);
      throw duringSession(e, mysqlError);
    }
  }
}

// The source fingerprint: MD5 over every column QUOTE()d (QUOTE tells NULL, written as the word
// NULL, from the string 'NULL'; CONCAT_WS would skip NULLs), computed by the server.
const MY_FP_METHOD = 'mysql:md5(concat_ws(quote(column)))';
function myFingerprint(columns: Column[]): string | undefined {
  const names = new Set<string>();
  for (const c of columns) {
    if (c.name.toLowerCase() === FINGERPRINT_COLUMN || names.has(c.name.toLowerCase())) return undefined;
    names.add(c.name.toLowerCase());
  }
  if (!columns.length) return undefined;
  return `MD5(CONCAT_WS(',', ${columns.map((c) => `QUOTE(bh_row.${quoteMysqlIdent(c.name)})`).join(', ')}))`;
}

/** COPY text-format escaping (backslash, tab, newline, carriage return). */
const copyText = (s: string) => s.replace(/[\\\t\n\r]/g, (c) => (c === '\\' ? '\\\\' : c === '\t' ? '\\t' : c === '\n' ? '\\n' : '\\r'));

// Privileges that change data or schema, at any level (SHOW GRANTS lists them per object).
const WRITE_PRIVILEGES = new Set([
  'INSERT', 'UPDATE', 'DELETE', 'CREATE', 'DROP', 'ALTER', 'INDEX', 'CREATE VIEW', 'CREATE ROUTINE', 'ALTER ROUTINE',
  'TRIGGER', 'EVENT', 'CREATE TEMPORARY TABLES', 'REFERENCES', 'DELETE HISTORY', 'CREATE TABLESPACE',
]);

/** Warnings from the `SHOW GRANTS` lines of the login (roles granted to it are not expanded). */
export function grantWarnings(lines: string[]): ConnectionWarning[] {
  let superuser = false;
  let write = false;
  for (const line of lines) {
    const m = /^GRANT\s+(.+?)\s+ON\s+(\S+)\s+TO\s/i.exec(line.trim());
    if (!m) continue;
    const privs = m[1].replace(/\([^)]*\)/g, '').split(',').map((p) => p.trim().toUpperCase().replace(/\s+/g, ' '));
    const global = m[2] === '*.*';
    for (const p of privs) {
      if (p === 'ALL' || p === 'ALL PRIVILEGES') {
        if (global) superuser = true;
        else write = true;
      } else if (p === 'SUPER' || p === 'FILE') superuser = true;
      else if (WRITE_PRIVILEGES.has(p)) write = true;
    }
  }
  if (superuser) {
    return [{
      code: 'superuser',
      message: 'The connection logs in with global administrative privileges (ALL, SUPER or FILE).',
      hint: 'Model queries run in a read-only session, but an administrator can reach past it (server files, other sessions). Use a user granted only SELECT on the tables your models read.',
    }];
  }
  if (write) {
    return [{
      code: 'can_write',
      message: 'The connection\'s user can modify data or schema.',
      hint: 'Model queries run in a read-only session, but a user granted only SELECT on the tables your models read makes that a property of the database too.',
    }];
  }
  return [];
}

export function openMysqlSource(config: SqlDatabaseConfig, secrets: ResolvedSecrets, ctx?: ConnectorContext): SourceConnector {
  return new MysqlSource(config, secrets, ctx);
}
