import postgres from 'postgres';
import type { Socket } from 'node:net';
import { ConnectorError } from '../../errors.ts';
import { guardedSocket } from '../../lib/address-guard.ts';
import { parseJson } from '../../lib/json.ts';
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
  // json/jsonb: numbers a double cannot hold exactly stay exact (src/lib/json.ts).
  bhJson: { to: 114, from: [114, 3802], serialize: (x: unknown) => JSON.stringify(x), parse: parseJson },
};

export type PgClient = postgres.Sql<Record<string, never>>;

export interface PgOpenOptions {
  /** BACKHAUL_DENY_PRIVATE_NETWORKS: refuse loopback/private addresses (link-local/metadata always are). */
  denyPrivateNetworks?: boolean;
  /** Extra startup parameters (GUCs) every connection starts with, e.g. default_transaction_read_only. */
  params?: Record<string, string>;
  /** Sees every socket the client opens (connections and cancel requests). */
  onSocket?: (socket: Socket) => void;
  /** Return false to make the client unable to open any further socket (a destroyed session). */
  mayConnect?: () => boolean;
  /** TCP keepalive idle time, seconds (then 10 probes 1 s apart, libuv's defaults): a dead peer is found in ~idle + 10 s. */
  keepAliveSeconds?: number;
  /**
   * false: postgres.js does not run its own array-type query after connecting. That query's
   * promise is not held by anyone (postgres.js 3.4, connection.js fetchArrayTypes), so a
   * connection that dies while it runs leaves an unhandled rejection in the process. A client
   * opened with false reads the array types itself (ARRAY_TYPES_SQL, installArrayTypes).
   */
  fetchTypes?: boolean;
}

/**
 * A postgres.js client whose sockets go through the address guard (resolved, checked, connected
 * to the checked address; TLS servername stays the host name), and which refuses to answer an
 * AuthenticationCleartextPassword request on a connection without TLS unless the connection
 * sets `allowCleartextPassword` (a server, or something posing as one, would receive the password).
 */
export function openPg(config: SqlDatabaseConfig, password: string | undefined, max: number, opts: PgOpenOptions = {}): PgClient {
  const port = config.port ?? 5432;
  const watchCleartext = config.ssl === 'disable' || config.ssl === undefined ? !config.allowCleartextPassword && !!password : false;
  let cleartextRefused = false;
  const socket = () => {
    if (opts.mayConnect && !opts.mayConnect()) throw new ConnectorError('connection_lost', 'The connection was closed.', { classification: 'retryable' });
    const s = guardedSocket({ host: config.host, port, denyPrivateNetworks: opts.denyPrivateNetworks ?? false });
    if (watchCleartext) refuseCleartextPassword(s, () => (cleartextRefused = true));
    opts.onSocket?.(s);
    return s;
  };
  return postgres({
    // postgres.js calls `socket(options)` for every connection (its typings omit the option).
    ...({ socket } as object),
    host: config.host,
    port,
    database: config.database,
    username: config.user,
    // A function, read when the server asks: empty once a cleartext request was refused, so the
    // password is never written even by the driver's own handling of that message.
    password: password === undefined ? undefined : ((() => (cleartextRefused ? '' : password)) as unknown as string),
    ssl: config.ssl === 'require' ? 'require' : config.ssl === 'verify-full' ? 'verify-full' : false,
    max,
    idle_timeout: 30,
    connect_timeout: 10,
    keep_alive: opts.keepAliveSeconds ?? 60,
    // Arbitrary user SQL: no named prepared statements (also keeps PgBouncer in transaction mode working).
    prepare: false,
    fetch_types: opts.fetchTypes ?? true,
    onnotice: () => {},
    connection: { TimeZone: 'UTC', application_name: 'backhaul', ...(opts.params ?? {}) },
    types: PG_TYPES,
  }) as unknown as PgClient;
}

/** Every array type of the database: its element type and the element delimiter of its text form. */
export const ARRAY_TYPES_SQL = `select a.oid::int as arr, e.oid::int as elem, e.typdelim as delim
from pg_catalog.pg_type a join pg_catalog.pg_type e on e.oid = a.typelem
where a.typcategory = 'A'`;

export interface PgArrayType {
  arr: number;
  elem: number;
  delim: string;
}

/**
 * Makes `sql` read every array type in `types` (rows of ARRAY_TYPES_SQL) as a JS array whose
 * elements go through the element type's parser, as postgres.js's own type fetch would.
 */
export function installArrayTypes(sql: PgClient, types: readonly PgArrayType[]): void {
  const parsers = sql.options.parsers as Record<number, ((x: string) => unknown) | undefined>;
  for (const t of types) {
    if (parsers[t.arr]) continue;
    const elem = parsers[t.elem];
    const parse = elem ? (x: string) => elem(x) : (x: string) => x;
    parsers[t.arr] = (x: string) => parsePgArray(x, parse, t.delim || ',');
  }
}

/**
 * Parses PostgreSQL's text form of an array (PostgreSQL docs, "Arrays", Array Input and Output
 * Syntax): `{a,"b c",NULL,{1,2}}`, optionally led by dimensions `[0:1]=`. Unquoted NULL is null,
 * quoted elements have `\` escapes; other elements go through `parse`. A text that is not an
 * array literal is returned as it is.
 */
export function parsePgArray(text: string, parse: (x: string) => unknown, delimiter = ','): unknown[] | string {
  let i = 0;
  if (text[0] === '[') i = text.indexOf('=') + 1;
  if (text[i] !== '{') return text;
  const malformed = new Error('malformed array');
  const read = (): unknown[] => {
    i++; // '{'
    const out: unknown[] = [];
    if (text[i] === '}') {
      i++;
      return out;
    }
    for (;;) {
      if (text[i] === '{') out.push(read());
      else if (text[i] === '"') {
        let v = '';
        for (i++; i < text.length && text[i] !== '"'; i++) v += text[i] === '\\' ? text[++i] : text[i];
        if (text[i++] !== '"') throw malformed;
        out.push(parse(v));
      } else {
        let j = i;
        while (j < text.length && text[j] !== delimiter && text[j] !== '}') j++;
        const raw = text.slice(i, j);
        i = j;
        out.push(raw.toUpperCase() === 'NULL' ? null : parse(raw));
      }
      if (text[i] === delimiter) i++;
      else if (text[i] === '}') {
        i++;
        return out;
      } else throw malformed;
    }
  };
  try {
    const out = read();
    return i === text.length ? out : text;
  } catch {
    return text;
  }
}

export function cleartextRefusedError(): ConnectorError {
  return new ConnectorError(
    'cleartext_password_refused',
    'The server asked for the password in clear text on a connection without TLS; Backhaul did not send it.',
    {
      classification: 'fatal',
      hint: 'Use TLS (ssl: "require" or "verify-full"), or configure the server for scram-sha-256 authentication. If the network path is trusted, set allowCleartextPassword: true on the connection.',
    },
  );
}

/**
 * Watches the server's messages until authentication ends; an AuthenticationCleartextPassword
 * request (message 'R', code 3; PostgreSQL protocol, "Message Formats") destroys the socket
 * before the driver can answer it. Runs before the driver's own listener on the same data.
 */
function refuseCleartextPassword(socket: Socket, onRefused: () => void): void {
  let buf: Buffer = Buffer.alloc(0);
  const onData = (chunk: Buffer) => {
    buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
    while (buf.length >= 9 || (buf.length >= 5 && buf[0] !== 82)) {
      const type = buf[0];
      const len = buf.readUInt32BE(1);
      if (type === 82) {
        const code = buf.readUInt32BE(5);
        if (code === 3) {
          socket.off('data', onData);
          onRefused();
          socket.destroy(cleartextRefusedError());
          return;
        }
        if (code === 0) return void socket.off('data', onData); // AuthenticationOk: nothing more to watch
      } else if (type === 69) {
        return void socket.off('data', onData); // ErrorResponse: the server gave up
      }
      if (buf.length < len + 1) return; // rest of this message still to come (only 'R' bodies are inspected)
      buf = buf.subarray(len + 1);
    }
  };
  socket.prependListener('data', onData);
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
