import { ConnectorError } from '../../errors.ts';

// Maps driver/network failures of the SQL connectors (sources and table destinations) onto
// stable ConnectorError codes. Both drivers surface Node's socket errors (`code: 'ECONNREFUSED'`)
// and their own server error codes (PG SQLSTATE in `code`, MySQL number in `errno`).

interface DriverError {
  code?: string;
  errno?: number;
  message?: string;
  sqlState?: string;
  detail?: string;
}

const NETWORK: Record<string, [string, string, 'fatal' | 'retryable', string]> = {
  ENOTFOUND: ['dns_not_found', 'The database host name could not be resolved', 'fatal', 'Check the host name: it must be resolvable from the Backhaul server.'],
  EAI_AGAIN: ['dns_not_found', 'The database host name could not be resolved (temporary DNS failure)', 'retryable', 'Check the host name and the DNS configuration of the Backhaul server.'],
  ECONNREFUSED: ['connection_refused', 'The database refused the connection', 'fatal', 'Check the host and port, and that the database accepts TCP connections from the Backhaul server.'],
  ETIMEDOUT: ['connection_timeout', 'Connecting to the database timed out', 'retryable', 'Check that a firewall or security group allows the Backhaul server to reach the database port.'],
  CONNECT_TIMEOUT: ['connection_timeout', 'Connecting to the database timed out', 'retryable', 'Check that a firewall or security group allows the Backhaul server to reach the database port.'],
  EHOSTUNREACH: ['connection_refused', 'The database host is unreachable', 'fatal', 'Check the host name and the network route from the Backhaul server.'],
  ENETUNREACH: ['connection_refused', 'The database network is unreachable', 'fatal', 'Check the host name and the network route from the Backhaul server.'],
  ECONNRESET: ['connection_lost', 'The connection to the database was reset', 'retryable', 'The database or a proxy closed the connection; the operation will be retried.'],
  EPIPE: ['connection_lost', 'The connection to the database was closed', 'retryable', 'The database or a proxy closed the connection; the operation will be retried.'],
  CONNECTION_CLOSED: ['connection_lost', 'The connection to the database was closed', 'retryable', 'The database or a proxy closed the connection; the operation will be retried.'],
  CONNECTION_ENDED: ['connection_lost', 'The connection to the database was closed', 'retryable', 'The database or a proxy closed the connection; the operation will be retried.'],
  CONNECTION_DESTROYED: ['connection_lost', 'The connection to the database was closed', 'retryable', 'The database or a proxy closed the connection; the operation will be retried.'],
  PROTOCOL_CONNECTION_LOST: ['connection_lost', 'The connection to the database was lost', 'retryable', 'The database or a proxy closed the connection; the operation will be retried.'],
};

const TLS_CODES = /^(ERR_TLS_|ERR_SSL_|CERT_|UNABLE_TO_|DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT)/;

function tls(message: string, cause: unknown): ConnectorError {
  return new ConnectorError('tls_error', `TLS negotiation with the database failed: ${message}`, {
    classification: 'fatal',
    hint: 'Check the `ssl` setting: use `disable` if the server has no TLS, `require` to skip certificate verification, `verify-full` only with a certificate trusted by the Backhaul server.',
    cause,
  });
}

/** Socket-level failures shared by both drivers; undefined when `e` is not one. */
export function networkError(e: DriverError, what = 'database'): ConnectorError | undefined {
  const code = e.code ?? '';
  const n = NETWORK[code];
  if (n) {
    return new ConnectorError(n[0], `${n[1].replace('database', what)}: ${e.message ?? code}`, { classification: n[2], hint: n[3], cause: e });
  }
  if (TLS_CODES.test(code)) {
    return tls(e.message ?? code, e);
  }
  return undefined;
}

const PG: Record<string, [string, 'fatal' | 'retryable', string]> = {
  '28P01': ['auth_failed', 'fatal', 'Check the user name and password.'],
  '28000': ['auth_failed', 'fatal', 'Check the user name, and that pg_hba.conf allows this user from the Backhaul server.'],
  '3D000': ['database_not_found', 'fatal', 'Check the database name.'],
  '42501': ['permission_denied', 'fatal', 'Grant the user the privileges it needs (e.g. SELECT on the tables the query reads).'],
  '25006': ['read_only_violation', 'fatal', 'Model queries run in a read-only transaction: use a SELECT that does not modify data.'],
  '57014': ['query_timeout', 'retryable', 'The query ran longer than the statement timeout: make it faster (indexes, filters) or raise statementTimeoutMs.'],
  '57P01': ['connection_lost', 'retryable', 'The database shut the connection down; the operation will be retried.'],
  '57P03': ['connection_refused', 'retryable', 'The database is starting up or not accepting connections yet.'],
  '53300': ['too_many_connections', 'retryable', 'The database has no free connection slots; raise max_connections or lower concurrency.'],
  '40001': ['serialization_failure', 'retryable', 'The transaction conflicted with another one; it will be retried.'],
  '40P01': ['deadlock', 'retryable', 'The transaction was chosen as a deadlock victim; it will be retried.'],
};

/** Translate a postgres.js error into a ConnectorError. */
export function pgError(e: unknown): ConnectorError {
  if (e instanceof ConnectorError) return e;
  const err = (e ?? {}) as DriverError;
  const net = networkError(err);
  if (net) return net;
  const code = err.code ?? '';
  const msg = err.message ?? String(e);
  const known = PG[code];
  if (known) return new ConnectorError(known[0], msg, { classification: known[1], hint: known[2], cause: e });
  if (code.startsWith('08')) {
    return new ConnectorError('connection_lost', msg, { classification: 'retryable', hint: 'The connection to the database failed; the operation will be retried.', cause: e });
  }
  if (code === 'SASL_SIGNATURE_MISMATCH' || code === 'AUTH_TYPE_NOT_IMPLEMENTED') {
    return new ConnectorError('auth_failed', msg, { classification: 'fatal', hint: 'Check the user name and password.', cause: e });
  }
  if (/^[0-9A-Z]{5}$/.test(code)) {
    return new ConnectorError('sql_error', msg, { classification: 'fatal', hint: 'Fix the SQL: the database rejected it with the message above.', status: 400, cause: e });
  }
  return new ConnectorError('connection_error', msg, { classification: 'retryable', hint: 'Unexpected error talking to the database.', cause: e });
}

const MY: Record<number, [string, 'fatal' | 'retryable', string]> = {
  1045: ['auth_failed', 'fatal', 'Check the user name and password, and that the user may connect from the Backhaul server host.'],
  1044: ['permission_denied', 'fatal', 'Grant the user access to this database.'],
  1142: ['permission_denied', 'fatal', 'Grant the user the privileges it needs on the tables involved.'],
  1143: ['permission_denied', 'fatal', 'Grant the user the privileges it needs on the columns involved.'],
  1049: ['database_not_found', 'fatal', 'Check the database name.'],
  1792: ['read_only_violation', 'fatal', 'Model queries run in a read-only transaction: use a SELECT that does not modify data.'],
  3024: ['query_timeout', 'retryable', 'The query ran longer than the statement timeout: make it faster or raise statementTimeoutMs.'],
  1969: ['query_timeout', 'retryable', 'The query ran longer than the statement timeout: make it faster or raise statementTimeoutMs.'],
  1317: ['query_timeout', 'retryable', 'The query was interrupted (statement timeout); make it faster or raise statementTimeoutMs.'],
  1040: ['too_many_connections', 'retryable', 'The database has no free connection slots; raise max_connections or lower concurrency.'],
  1213: ['deadlock', 'retryable', 'The transaction was chosen as a deadlock victim; it will be retried.'],
  1205: ['lock_timeout', 'retryable', 'A lock wait timed out; it will be retried.'],
  2013: ['connection_lost', 'retryable', 'The connection to the database was lost; the operation will be retried.'],
  2006: ['connection_lost', 'retryable', 'The database server has gone away; the operation will be retried.'],
  1927: ['connection_lost', 'retryable', 'The connection was killed on the server (KILL); the operation will be retried.'],
};

/** Translate a mysql2 error into a ConnectorError. */
export function mysqlError(e: unknown): ConnectorError {
  if (e instanceof ConnectorError) return e;
  const err = (e ?? {}) as DriverError & { fatal?: boolean };
  const msg = err.message ?? String(e);
  const known = err.errno !== undefined ? MY[err.errno] : undefined;
  if (known) return new ConnectorError(known[0], msg, { classification: known[1], hint: known[2], cause: e });
  const net = networkError(err);
  if (net) return net;
  if (err.code === 'HANDSHAKE_SSL_ERROR' || err.code === 'HANDSHAKE_NO_SSL_SUPPORT') return tls(msg, e);
  if (err.sqlState || (err.errno && err.errno >= 1000 && err.errno < 5000)) {
    return new ConnectorError('sql_error', msg, { classification: 'fatal', hint: 'Fix the SQL: the database rejected it with the message above.', status: 400, cause: e });
  }
  return new ConnectorError('connection_error', msg, { classification: 'retryable', hint: 'Unexpected error talking to the database.', cause: e });
}

/** Strip surrounding whitespace and trailing semicolons: what the user meant as one statement. */
export function normaliseSql(sql: string): string {
  return sql.trim().replace(/;\s*$/, '').trim();
}

export function readOnlyViolation(keyword: string): ConnectorError {
  return new ConnectorError('read_only_violation', `Model queries may only read data; "${keyword.toUpperCase()}" statements are refused.`, {
    classification: 'fatal',
    status: 400,
    hint: 'Write the model as a SELECT (or WITH … SELECT) query.',
  });
}
