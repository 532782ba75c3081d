import type { Readable } from 'node:stream';
import { resumeAfterCopy } from '../../lib/copy-out.ts';
import type { Socket } from 'node:net';
import { FINGERPRINT_COLUMN, type Column, type ConnectionTestReport, type ConnectionWarning, type ConnectorContext, type FingerprintOptions, type FingerprintSession, type PreviewResult, type ResolvedSecrets, type Row, type SourceConnector, type StreamOptions } from '../types.ts';
import type { SqlDatabaseConfig } from '../sql-config.ts';
import { ConnectorError } from '../../errors.ts';
import { ARRAY_TYPES_SQL, installArrayTypes, openPg, pgColumnType, type PgArrayType, type PgClient } from './pg-client.ts';
import { pgError } from './sql-errors.ts';
import { DEFAULT_STATEMENT_TIMEOUT_MS, PREVIEW_TIMEOUT_MS, cancelled, prepareModelSql } from './read-only.ts';
import { CANCEL_TIMEOUT_MS, CONTROL_TIMEOUT_MS, DATA_GRACE_MS, DeadlineExceeded, bounded, duringSession } from './bounded.ts';
import { PREVIEW_MAX_VALUE_BYTES, PreviewCollector } from './preview-bounds.ts';

/**
 * One connection for one operation (test, columns, preview, stream). It starts read-only
 * (`default_transaction_read_only` and `statement_timeout` are startup parameters, so even a
 * reconnect could only be read-only) and is destroyed, not reused, when anything goes wrong:
 * postgres.js can hang (or write to a dead socket) when asked to talk again on a connection that
 * failed under it, so after a failure we never send another byte on it.
 */
class PgSession {
  readonly sql: PgClient;
  #sockets = new Set<Socket>();
  #closed = false;

  constructor(config: SqlDatabaseConfig, password: string | undefined, denyPrivateNetworks: boolean, statementTimeoutMs: number) {
    this.sql = openPg(config, password, 1, {
      denyPrivateNetworks,
      // standard_conforming_strings: the model guard reads '…' the way the server does (no backslash escapes).
      params: { default_transaction_read_only: 'on', standard_conforming_strings: 'on', statement_timeout: String(Math.max(1, Math.floor(statementTimeoutMs))) },
      mayConnect: () => !this.#closed,
      // A peer that vanished (host down, route black-holed) is noticed by TCP in ~15 s of silence.
      keepAliveSeconds: 5,
      // Its own type query would run outside every bound and reject unhandled when the
      // connection dies under it: PostgresSource#ready reads the array types instead.
      fetchTypes: false,
      onSocket: (s) => {
        this.#sockets.add(s);
        s.once('close', () => this.#sockets.delete(s));
      },
    });
  }

  /** Drops the connection at once (the server rolls back whatever was open). */
  destroy(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.sql.end({ timeout: 0 }).catch(() => {});
    for (const s of this.#sockets) s.destroy();
  }

  /** Ends a healthy session politely (Terminate), within a bound; destroys it in any case. */
  async end(): Promise<void> {
    if (this.#closed) return;
    try {
      await bounded(this.sql.end({ timeout: 1 }), CONTROL_TIMEOUT_MS, 'closing the connection');
    } catch {
      // destroyed below
    } finally {
      this.destroy();
    }
  }
}

// One round trip: is the login a superuser, or can it change anything? (Server file roles count
// as superuser-like: they read and write the server's files.)
const PRIVILEGES_SQL = `
select r.rolsuper or exists (
         select 1 from pg_roles f
         where f.rolname in ('pg_read_server_files', 'pg_write_server_files', 'pg_execute_server_program')
           and pg_has_role(current_user, f.oid, 'member')) as superuser,
       exists (
         select 1 from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where c.relkind in ('r', 'p', 'v', 'm', 'f') and n.nspname <> 'information_schema' and n.nspname !~ '^pg_'
           and has_table_privilege(c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE')) as can_write_tables,
       exists (
         select 1 from pg_namespace n
         where n.nspname <> 'information_schema' and n.nspname !~ '^pg_' and has_schema_privilege(n.oid, 'CREATE')) as can_create,
       has_database_privilege(current_database(), 'CREATE') as can_create_schemas
from pg_roles r where r.rolname = current_user`;

/** How long the privilege look-up behind connection-test warnings may take. */
const WARNINGS_TIMEOUT_MS = 5_000;

const WARN_SUPERUSER: ConnectionWarning = {
  code: 'superuser',
  message: 'The connection logs in as a superuser (or a role that can read and write server files).',
  hint: 'Model queries run read-only, but a superuser can reach past a read-only transaction (file functions, dblink, other sessions). Use a role granted only SELECT on the tables your models read.',
};
const WARN_WRITE: ConnectionWarning = {
  code: 'can_write',
  message: 'The connection\'s role can modify data or create objects in this database.',
  hint: 'Model queries run read-only, but a role granted only SELECT on the tables your models read makes that a property of the database too.',
};

/**
 * PostgreSQL model source. Every model query runs on its own connection inside `BEGIN READ ONLY`
 * (and a read-only session), with a statement timeout, through the extended protocol (one
 * statement only: `commit; delete …` cannot escape the transaction), and rows are fetched
 * through a portal (`cursor(n)`) so memory stays flat. Every await is bounded (bounded.ts).
 */
export class PostgresSource implements SourceConnector {
  readonly #config: SqlDatabaseConfig;
  readonly #password: string | undefined;
  readonly #deny: boolean;
  readonly #timeoutMs: number;
  readonly #sessions = new Set<PgSession>();
  /** The database's array types, read once by the first session that reads rows. */
  #arrayTypes: PgArrayType[] | undefined;
  /** server_version_num, read with the array types. */
  #serverVersion: number | undefined;

  constructor(config: SqlDatabaseConfig, secrets: ResolvedSecrets, ctx: ConnectorContext = { denyPrivateNetworks: false }) {
    this.#config = config;
    this.#password = secrets.password;
    this.#deny = ctx.denyPrivateNetworks;
    this.#timeoutMs = config.statementTimeoutMs ?? DEFAULT_STATEMENT_TIMEOUT_MS;
  }

  async test(): Promise<ConnectionTestReport> {
    const s = this.#open(CONTROL_TIMEOUT_MS);
    try {
      await bounded(s.sql.unsafe('select 1'), CONTROL_TIMEOUT_MS, 'testing the connection');
    } catch (e) {
      this.#drop(s);
      if (e instanceof DeadlineExceeded) {
        throw new ConnectorError('connection_timeout', `Connecting to the database timed out (${e.message}).`, {
          classification: 'retryable',
          hint: 'Check that a firewall or security group allows the Backhaul server to reach the database port.',
        });
      }
      throw pgError(e);
    }
    // Warnings are advice: a catalogue that is slow to scan or hidden from this login gives none.
    let row: Record<string, unknown> | undefined;
    try {
      [row] = await bounded(s.sql.unsafe(PRIVILEGES_SQL), WARNINGS_TIMEOUT_MS, 'reading privileges');
      await this.#close(s);
    } catch {
      this.#drop(s);
    }
    const warnings: ConnectionWarning[] = [];
    if (row?.superuser) warnings.push(WARN_SUPERUSER);
    else if (row?.can_write_tables || row?.can_create || row?.can_create_schemas) warnings.push(WARN_WRITE);
    return warnings.length ? { warnings } : {};
  }

  async columns(sql: string): Promise<Column[]> {
    const q = prepareModelSql(sql);
    // Describe parses and plans nothing: no rows are read.
    return this.#once(this.#timeoutMs, (s) => this.#describe(s, q));
  }

  async preview(sql: string, limit: number, opts: { timeoutMs?: number } = {}): Promise<PreviewResult> {
    const q = prepareModelSql(sql);
    const n = Math.max(0, Math.min(Math.floor(limit), 10_000));
    const timeoutMs = opts.timeoutMs ?? Math.min(PREVIEW_TIMEOUT_MS, this.#timeoutMs);
    return this.#once(timeoutMs, async (s) => {
      const columns = await this.#describe(s, q);
      const out = new PreviewCollector();
      if (n === 0) return out.result(columns);
      // Long values are cut by the server (each column also comes back as a short text when its
      // text is longer than the limit), and rows are fetched a few at a time, sized by the widest
      // row so far: what crosses the wire stays near the budget whatever the table holds.
      const k = columns.length;
      const alias = Array.from({ length: k }, (_, i) => `c${i}`);
      const select = k
        ? alias
            .map((c) => `case when octet_length(${c}::text) <= ${PREVIEW_MAX_VALUE_BYTES} then ${c} end, case when octet_length(${c}::text) > ${PREVIEW_MAX_VALUE_BYTES} then left(${c}::text, ${PREVIEW_MAX_VALUE_BYTES + 1}) end as ${c}_cut`)
            .join(', ')
        : '';
      const wrapped = k ? `select ${select} from (${q}\n) as bh_preview(${alias.join(', ')})` : q;
      try {
        await this.#step(s.sql.unsafe(`declare bh_preview no scroll cursor for ${wrapped}`), timeoutMs + DATA_GRACE_MS, 'starting the preview query');
      } catch (e) {
        // 0A000: PostgreSQL will not nest or declare this query (a data-modifying WITH): run it
        // as written, a row at a time, so the database reports what is wrong with it.
        if ((e as { code?: string }).code !== '0A000') throw e;
        await this.#step(s.sql.unsafe('rollback'), CONTROL_TIMEOUT_MS, 'rolling back');
        await this.#step(s.sql.unsafe('begin read only'), CONTROL_TIMEOUT_MS, 'starting a read-only transaction');
        return this.#previewAsWritten(s, q, n, timeoutMs, columns, out);
      }
      let read = 0;
      let fetch = 1;
      while (read < n) {
        const rows = (await this.#step(s.sql.unsafe(`fetch ${Math.min(fetch, n - read)} from bh_preview`, [], { prepare: false }).values(), timeoutMs + DATA_GRACE_MS, 'reading preview rows')) as unknown[][];
        for (const values of rows) {
          const row: Row = {};
          for (let i = 0; i < k; i++) row[columns[i].name] = values[2 * i] ?? values[2 * i + 1] ?? null;
          if (!out.add(row)) return out.result(columns);
        }
        read += rows.length;
        if (rows.length < fetch) break;
        fetch = Math.max(1, Math.min(100, Math.floor(out.remainingBytes / Math.max(1, out.widestRow))));
      }
      return out.result(columns);
    });
  }

  async #previewAsWritten(s: PgSession, q: string, n: number, timeoutMs: number, columns: Column[], out: PreviewCollector): Promise<PreviewResult> {
    const it = s.sql.unsafe(q, [], { prepare: false }).cursor(1)[Symbol.asyncIterator]();
    let read = 0;
    while (read < n) {
      const r = await this.#step(it.next(), timeoutMs + DATA_GRACE_MS, 'reading preview rows');
      if (r.done) return out.result(columns);
      read++;
      if (!out.add((r.value as Row[])[0])) break;
    }
    await this.#step(Promise.resolve(it.return?.()), CONTROL_TIMEOUT_MS, 'closing the cursor');
    return out.result(columns);
  }

  async *stream(sql: string, opts: StreamOptions = {}): AsyncIterable<Row[]> {
    const q = prepareModelSql(sql);
    const batchSize = Math.max(1, opts.batchSize ?? 1000);
    const { signal } = opts;
    if (signal?.aborted) throw cancelled();
    const s = this.#open(this.#timeoutMs);
    const dataMs = this.#timeoutMs + DATA_GRACE_MS;
    let query: ReturnType<PgClient['unsafe']> | undefined;
    let next: Promise<IteratorResult<unknown>> | undefined;
    let clean = false;
    // Stops the server-side work too (a dropped connection alone leaves a long query running):
    // a cancel request goes out on its own connection, and the pending read settles once the
    // server stopped.
    const cancelServerSide = async () => {
      if (!query || !next) return;
      requestCancel(query);
      await bounded(next, CANCEL_TIMEOUT_MS, 'cancelling the query').catch(() => {});
    };
    try {
      await this.#ready(s, signal);
      await bounded(s.sql.unsafe('begin read only'), CONTROL_TIMEOUT_MS, 'starting a read-only transaction', signal);
      // With fingerprints, the model is wrapped as a subquery; a query PostgreSQL will not nest
      // (a data-modifying WITH, 0A000) is then run as written, so the database reports what is wrong with it.
      const fp = opts.fingerprint && pgFingerprint(opts.fingerprint.columns, this.#serverVersion);
      const wrapped = fp ? `select bh_row.*, ${fp.sql} as ${FINGERPRINT_COLUMN} from (${q}\n) as bh_row` : undefined;
      let first = true;
      let it: AsyncIterator<unknown>;
      const fetchNext = () => {
        const p = Promise.resolve(it.next());
        p.catch(() => {}); // awaited below; a read-ahead abandoned by an early exit must not go unhandled
        return p;
      };
      const start = (text: string) => {
        query = s.sql.unsafe(text, [], { prepare: false });
        // One batch of read-ahead: PostgreSQL produces the next batch while the caller maps this
        // one (a plain for-await fetches only once the caller is done, leaving both sides idle in turn).
        it = query.cursor(batchSize)[Symbol.asyncIterator]();
        next = fetchNext();
      };
      start(wrapped ?? q);
      for (;;) {
        let r: IteratorResult<unknown>;
        try {
          r = await bounded(next!, dataMs, 'reading rows', signal);
        } catch (e) {
          if (!(first && wrapped && (e as { code?: string }).code === '0A000')) throw e;
          await bounded(s.sql.unsafe('rollback'), CONTROL_TIMEOUT_MS, 'rolling back', signal);
          await bounded(s.sql.unsafe('begin read only'), CONTROL_TIMEOUT_MS, 'starting a read-only transaction', signal);
          first = false;
          start(q);
          continue;
        }
        first = false;
        if (r.done) break;
        next = fetchNext();
        yield r.value as Row[];
        if (signal?.aborted) throw cancelled();
      }
      clean = true;
    } catch (e) {
      if (signal?.aborted || (e instanceof ConnectorError && e.code === 'cancelled')) {
        await cancelServerSide();
        throw cancelled();
      }
      if (e instanceof DeadlineExceeded) await cancelServerSide();
      throw duringSession(e, pgError);
    } finally {
      // A finished read ends the connection politely; anything else (an error, a cancel, an early
      // exit by the caller with a read-ahead in flight) drops it: nothing more is sent on it.
      if (clean) await this.#close(s);
      else this.#drop(s);
    }
  }

  fingerprintMethod(columns: Column[]): string | undefined {
    return pgFingerprint(columns, this.#serverVersion)?.method;
  }

  async fingerprints(sql: string, opts: FingerprintOptions): Promise<FingerprintSession | undefined> {
    const q = prepareModelSql(sql);
    const pk = opts.columns.find((c) => c.name === opts.primaryKey);
    // Keys travel as text (COPY) and come back as `= any($1::text[]::type[])`: only types whose
    // text form is the engine's String(value) and which compare exactly (or filter below) qualify.
    if (!pk || !pgFingerprintable(opts.columns) || !PG_KEY_TYPES.test(pk.nativeType)) return undefined;
    const { signal } = opts;
    const s = this.#open(this.#timeoutMs);
    const dataMs = this.#timeoutMs + DATA_GRACE_MS;
    const begin = () => bounded(s.sql.unsafe('begin isolation level repeatable read read only'), CONTROL_TIMEOUT_MS, 'starting a read-only transaction', signal);
    let snapshot: string | undefined;
    try {
      await this.#ready(s, signal);
      // One snapshot for the key scan and every fetch: the rows fetched are the rows fingerprinted.
      await begin();
      // Exported, so that a second connection fetches rows by key while this one scans the keys
      // (PostgreSQL, "Snapshot Synchronization Functions"). Where the server will not export one
      // (a standby before PostgreSQL 10, a pooler in transaction mode), the transaction is begun
      // again and the fetches wait for the scan's end.
      try {
        const [r] = await bounded(s.sql.unsafe<{ id: string }[]>('select pg_export_snapshot() as id'), CONTROL_TIMEOUT_MS, 'exporting the snapshot', signal);
        if (/^[0-9A-Fa-f-]+$/.test(r.id)) snapshot = r.id;
      } catch (e) {
        if (!(e instanceof Error && 'code' in e && typeof e.code === 'string' && /^[0-9A-Z]{5}$/.test(e.code))) throw e;
        await bounded(s.sql.unsafe('rollback'), CONTROL_TIMEOUT_MS, 'rolling back', signal);
        await begin();
      }
    } catch (e) {
      this.#drop(s);
      throw duringSession(e, pgError);
    }
    // The fetching connection, opened by the first fetch sent while the scan runs (an unchanged
    // model opens none); undefined when it could not share the snapshot.
    let fetcher: Promise<PgSession | undefined> | undefined;
    const openFetcher = async (id: string): Promise<PgSession | undefined> => {
      const f = this.#open(this.#timeoutMs);
      try {
        await this.#ready(f, signal);
        await bounded(f.sql.unsafe('begin isolation level repeatable read read only'), CONTROL_TIMEOUT_MS, 'starting a read-only transaction', signal);
        await bounded(f.sql.unsafe(`set transaction snapshot '${id}'`), CONTROL_TIMEOUT_MS, 'importing the snapshot', signal);
        return f;
      } catch {
        this.#drop(f);
        return undefined;
      }
    };
    let scanOver = false;
    let scanEnded!: () => void;
    const scanned = new Promise<void>((resolve) => (scanEnded = resolve));
    const fp = pgFingerprint(opts.columns, this.#serverVersion)!;
    const pkCol = pgIdent(pk.name);
    const from = `from (${q}
) as bh_row`;
    let broken = false;
    const dropAll = () => {
      this.#drop(s);
      void fetcher?.then((f) => f && this.#drop(f));
    };
    const fail = async (e: unknown, query: ReturnType<PgClient['unsafe']> | undefined, pending: Promise<unknown> | undefined, sig?: AbortSignal) => {
      broken = true;
      const aborted = sig?.aborted || (e instanceof ConnectorError && e.code === 'cancelled');
      if (query && pending && (aborted || e instanceof DeadlineExceeded)) {
        requestCancel(query);
        await bounded(pending, CANCEL_TIMEOUT_MS, 'cancelling the query').catch(() => {});
      }
      dropAll();
      return aborted ? cancelled() : duringSession(e, pgError);
    };
    return {
      method: fp.method,
      fetchesDuringScan: snapshot !== undefined,
      keys: async function* (this: void, prefix: string, sig?: AbortSignal) {
        if (!/^[0-9a-z]*:?$/.test(prefix)) throw new Error(`fingerprint prefix ${JSON.stringify(prefix)}`);
        const query = s.sql.unsafe(`copy (select bh_row.${pkCol}, '${prefix}' || ${fp.sql} ${from}) to stdout`, [], { prepare: false });
        let pending: Promise<unknown> | undefined;
        try {
          pending = Promise.resolve(query.readable());
          const stream = (await bounded(pending, dataMs, 'starting the key scan', sig)) as AsyncIterable<Buffer>;
          const it = stream[Symbol.asyncIterator]();
          for (;;) {
            pending = it.next();
            const r = (await bounded(pending, dataMs, 'reading keys', sig)) as IteratorResult<Buffer>;
            if (r.done) break;
            yield r.value;
            if (sig?.aborted) throw cancelled();
          }
          // The fetches by key may run on this connection next (copy-out.ts).
          resumeAfterCopy(stream as unknown as Readable);
        } catch (e) {
          throw await fail(e, query, pending, sig);
        } finally {
          scanOver = true;
          scanEnded();
        }
      },
      fetch: async (keys: string[], sig?: AbortSignal) => {
        const lost = () => new ConnectorError('source_unavailable', 'The connection to the source was lost.', { classification: 'retryable' });
        if (broken) throw lost();
        // During the scan, the fetching connection (opened within the bounds above) when it
        // shares the snapshot; else this one once the scan is over (bounded by its own reads).
        if (!fetcher && snapshot && !scanOver) fetcher = openFetcher(snapshot);
        let conn = await fetcher;
        if (!conn) {
          await scanned;
          conn = s;
        }
        if (broken) throw lost();
        const query = conn.sql.unsafe(
          `select bh_row.*, ${fp.sql} as ${FINGERPRINT_COLUMN} ${from} where bh_row.${pkCol} = any($1::text[]::${pk.nativeType}[])`,
          [pgTextArray(keys)],
          { prepare: false },
        );
        const pending = Promise.resolve(query);
        pending.catch(() => {});
        try {
          return [...((await bounded(pending, dataMs, 'reading rows', sig)) as unknown as Row[])];
        } catch (e) {
          throw await fail(e, query, pending, sig);
        }
      },
      close: async () => {
        if (broken) return;
        broken = true;
        const f = await fetcher;
        await Promise.all([this.#close(s), f && this.#close(f)]);
      },
    };
  }

  async close(): Promise<void> {
    for (const s of this.#sessions) this.#drop(s);
  }

  #open(statementTimeoutMs: number): PgSession {
    const s = new PgSession(this.#config, this.#password, this.#deny, statementTimeoutMs);
    this.#sessions.add(s);
    return s;
  }

  async #close(s: PgSession): Promise<void> {
    this.#sessions.delete(s);
    await s.end();
  }

  #drop(s: PgSession): void {
    this.#sessions.delete(s);
    s.destroy();
  }

  /** Makes the session read arrays as arrays (the first session of this source reads which types are arrays). */
  async #ready(s: PgSession, signal?: AbortSignal): Promise<void> {
    if (!this.#arrayTypes) {
      const [types, [v]] = await bounded(
        Promise.all([s.sql.unsafe<PgArrayType[]>(ARRAY_TYPES_SQL), s.sql.unsafe<{ v: number }[]>(`select current_setting('server_version_num')::int as v`)]),
        CONTROL_TIMEOUT_MS,
        'reading array types',
        signal,
      );
      this.#serverVersion = Number(v.v);
      this.#arrayTypes = types;
    }
    installArrayTypes(s.sql, this.#arrayTypes);
  }

  #step<T>(p: PromiseLike<T>, ms: number, what: string): Promise<T> {
    return bounded(p, ms, what);
  }

  /** Runs `fn` on a fresh read-only session; any failure drops the session. */
  async #once<T>(timeoutMs: number, fn: (s: PgSession) => Promise<T>): Promise<T> {
    const s = this.#open(timeoutMs);
    try {
      await this.#ready(s);
      await this.#step(s.sql.unsafe('begin read only'), CONTROL_TIMEOUT_MS, 'starting a read-only transaction');
      const out = await fn(s);
      await this.#close(s);
      return out;
    } catch (e) {
      this.#drop(s);
      throw duringSession(e, pgError);
    }
  }

  async #describe(s: PgSession, q: string): Promise<Column[]> {
    const d = await this.#step(s.sql.unsafe(q, [], { prepare: false }).describe(), this.#timeoutMs + DATA_GRACE_MS, 'describing the query');
    const oids = [...new Set(d.columns.map((c) => c.type))];
    const types = oids.length
      ? await this.#step(
          s.sql.unsafe<{ oid: number; category: string; name: string }[]>(
            `select oid::int as oid, typcategory as category, format_type(oid, null) as name from pg_type where oid = any($1::oid[])`,
            [`{${oids.join(',')}}`],
          ),
          CONTROL_TIMEOUT_MS,
          'reading column types',
        )
      : [];
    const byOid = new Map(types.map((t) => [Number(t.oid), t]));
    return d.columns.map((c) => {
      const t = byOid.get(c.type);
      return { name: c.name, type: pgColumnType(c.type, t?.category), nativeType: t?.name ?? String(c.type) };
    });
  }
}

/**
 * Sends a CancelRequest for `query` (PostgreSQL protocol, "Canceling Requests in Progress": a new
 * connection carrying the backend's pid and secret) and never lets its outcome escape: the cancel
 * is best effort, the caller bounds its wait on the query itself.
 *
 * Not `query.cancel()`: postgres.js (3.4, src/query.js) returns `null` from it and drops the
 * promise of the cancel connection, which rejects when that connection fails (reset or refused,
 * `write ECONNRESET` while sending the request, or no socket at all once the session was
 * destroyed): an unhandled rejection in the server process. The query's own canceller returns
 * that promise, so it is called here, once, and its rejection handled.
 */
export function requestCancel(query: ReturnType<PgClient['unsafe']>): void {
  const q = query as unknown as { canceller?: ((q: unknown) => Promise<unknown> | unknown) | null };
  if (!('canceller' in q)) {
    // A driver without the field: fall back to its public call (the resilience tests catch a leak).
    void Promise.resolve(query.cancel()).catch(() => {});
    return;
  }
  const canceller = q.canceller;
  if (typeof canceller !== 'function') return; // already cancelled
  q.canceller = null;
  try {
    void Promise.resolve(canceller(query)).catch(() => {});
  } catch {
    // a cancel that cannot even start changes nothing: the caller drops the session anyway
  }
}

// The source fingerprint, a 64-bit hash of the row computed by PostgreSQL. From PostgreSQL 14:
// the columns whose type's own hash function tells every distinct value apart (integers,
// booleans, dates and times, uuid, bytea) hashed together by hash_record_extended, XORed with a
// seeded hash of each other column's text form in the "C" collation (text, numeric — where
// 1.5 = 1.50 for numeric's own hash —, json, arrays, floats…), seeded by its position (a value
// moved to another column changes the hash) and NULL standing for its seed. No text form of the
// whole row is built, and long values are not copied into a record first: measured at 1M rows
// of ten columns, 540 ms against 690 ms for hash_record_extended over all of them (a bare COPY
// of the model: 700 ms). Before 14: a hash of the row's text form.
const PG_EXACT_HASH = new Set(['smallint', 'integer', 'bigint', 'boolean', 'date', 'timestamp without time zone', 'timestamp with time zone', 'time without time zone', 'uuid', 'bytea', 'oid']);

function pgFingerprint(columns: Column[], serverVersion: number | undefined): { sql: string; method: string } | undefined {
  if (!serverVersion || !pgFingerprintable(columns)) return undefined;
  if (serverVersion < 140000) return { sql: 'hashtextextended(bh_row::text, 0)', method: 'pg:hashtextextended(record::text,0)' };
  const exact = (c: Column) => PG_EXACT_HASH.has(c.nativeType.replace(/\(\d+(,\d+)?\)/, ''));
  const record = columns.filter(exact).map((c) => `bh_row.${pgIdent(c.name)}`);
  const parts = record.length ? [`hash_record_extended(row(${record.join(', ')}), 0)`] : [];
  columns.forEach((c, i) => {
    if (!exact(c)) parts.push(`coalesce(hashtextextended(bh_row.${pgIdent(c.name)}::text collate "C", ${i + 1}), ${i + 1})`);
  });
  const method = `pg14:record-xor-text(${columns.map((c) => (exact(c) ? 'v' : 't')).join('')})`;
  return { sql: `(${parts.join(' # ')})`, method };
}
// Primary-key types whose text form is what the engine records (String(value)).
const PG_KEY_TYPES = /^(smallint|integer|bigint|text|citext|name|uuid|character varying(\(\d+\))?|character(\(\d+\))?|numeric(\(\d+(,\d+)?\))?)$/;

/** Whether the model's rows can be fingerprinted as `bh_row` (its names do not shadow the alias or the fingerprint). */
function pgFingerprintable(columns: Column[]): boolean {
  const names = new Set<string>();
  for (const c of columns) {
    if (c.name === 'bh_row' || c.name === FINGERPRINT_COLUMN || names.has(c.name)) return false;
    names.add(c.name);
  }
  return columns.length > 0;
}

const pgIdent = (name: string) => `"${name.replace(/"/g, '""')}"`;

/** A text[] literal: every element quoted, `"` and `\` escaped. */
function pgTextArray(values: string[]): string {
  return `{${values.map((v) => `"${v.replace(/[\\"]/g, (c) => `\\${c}`)}"`).join(',')}}`;
}

export function openPostgresSource(config: SqlDatabaseConfig, secrets: ResolvedSecrets, ctx?: ConnectorContext): SourceConnector {
  return new PostgresSource(config, secrets, ctx);
}
