import { ConnectorError } from '../../errors.ts';
import { normaliseSql, readOnlyViolation } from './sql-errors.ts';
import { lexSql, type SqlDialect, type Token } from './sql-lexer.ts';

export type { SqlDialect } from './sql-lexer.ts';

// Model SQL runs in a read-only session and a read-only transaction, which is what actually
// stops writes. The checks below are a second layer for what those cannot catch, found on the
// tokens the server would see (sql-lexer.ts), not on raw text:
// - MySQL and MariaDB run DDL (CREATE, DROP…) after an implicit COMMIT, outside the transaction,
//   and execute the content of /*! … */ and /*M! … */ comments: those are refused as code;
// - writing or reading server files (SELECT … INTO OUTFILE/DUMPFILE, LOAD_FILE; PostgreSQL's
//   pg_read_file, lo_import/lo_export, pg_ls_dir…), which no read-only transaction stops;
// - PostgreSQL calls that act outside the transaction: dblink (a second session that is not
//   read-only), set_config(…, false) (session-level settings), and signalling other backends.
// COPY … TO PROGRAM is a statement of its own: it cannot appear inside a SELECT, and a second
// statement is refused by the extended protocol (PostgreSQL) or multipleStatements: false (MySQL).
const READ_KEYWORDS = new Set(['select', 'with', 'values', 'table']);
const WRITE_KEYWORDS = new Set([
  'insert', 'update', 'delete', 'merge', 'replace', 'upsert', 'create', 'drop', 'alter', 'truncate', 'rename', 'grant',
  'revoke', 'call', 'do', 'load', 'copy', 'set', 'lock', 'unlock', 'commit', 'rollback', 'begin', 'start', 'end',
  'savepoint', 'release', 'prepare', 'execute', 'deallocate', 'vacuum', 'analyze', 'optimize', 'repair', 'cluster',
  'reindex', 'refresh', 'comment', 'handler', 'flush', 'kill', 'reset', 'purge', 'install', 'uninstall', 'xa',
  'import', 'discard', 'listen', 'notify', 'checkpoint', 'reassign', 'security',
]);

// Functions refused when called (name followed by "("), whatever the schema or quoting.
const PG_FORBIDDEN = new Set([
  // server files and directories (superuser or pg_read/write_server_files)
  'pg_read_file', 'pg_read_binary_file', 'pg_stat_file', 'pg_ls_dir', 'pg_ls_logdir', 'pg_ls_waldir', 'pg_ls_tmpdir',
  'pg_ls_archive_statusdir', 'pg_ls_logicalsnapdir', 'pg_ls_logicalmapdir', 'pg_ls_replslotdir', 'lo_import', 'lo_export',
  'pg_file_write', 'pg_file_rename', 'pg_file_unlink', 'pg_file_sync', 'pg_logdir_ls',
  // other sessions and the server itself
  'pg_terminate_backend', 'pg_cancel_backend', 'pg_reload_conf', 'pg_rotate_logfile', 'pg_promote', 'pg_switch_wal',
  'pg_create_restore_point', 'pg_backup_start', 'pg_backup_stop', 'pg_start_backup', 'pg_stop_backup',
  'pg_create_physical_replication_slot', 'pg_create_logical_replication_slot', 'pg_drop_replication_slot',
  'pg_copy_physical_replication_slot', 'pg_copy_logical_replication_slot', 'pg_replication_origin_create',
  'pg_replication_origin_drop', 'pg_log_backend_memory_contexts', 'pg_import_system_collations',
]);
const MYSQL_FORBIDDEN = new Set(['load_file', 'sys_exec', 'sys_eval']);

/** Normalised single statement, or a ConnectorError explaining why it cannot be a model query. */
export function prepareModelSql(sql: string, dialect: SqlDialect = 'postgres'): string {
  const q = normaliseSql(sql ?? '');
  if (!q) {
    throw new ConnectorError('sql_error', 'The query is empty.', { classification: 'fatal', status: 400, hint: 'Write a SELECT query.' });
  }
  // MySQL's string rules depend on the server's sql_mode (NO_BACKSLASH_ESCAPES): the query is
  // checked under both readings, so whichever the server uses, it was checked.
  const readings = dialect === 'mysql' ? [lexSql(q, dialect, { backslashEscapes: true }), lexSql(q, dialect, { backslashEscapes: false })] : [lexSql(q, dialect)];
  for (const { tokens, executableComments } of readings) {
    if (executableComments.length) {
      throw forbidden(
        `Executable comments (${executableComments[0].slice(0, 4)}… */) are refused in model queries: MySQL and MariaDB run their content as SQL.`,
        'Remove the /*! … */ or /*M! … */ comment; write plain SQL.',
      );
    }
    const kw = leadingWord(tokens);
    if (WRITE_KEYWORDS.has(kw)) throw readOnlyViolation(kw);
    if (!READ_KEYWORDS.has(kw)) {
      throw new ConnectorError('sql_error', `A model query must be a SELECT (or WITH … SELECT); it starts with "${(kw || q).slice(0, 40)}".`, {
        classification: 'fatal',
        status: 400,
        hint: 'Write the model as a single SELECT query.',
      });
    }
    if (dialect === 'mysql') checkMysql(tokens);
    else checkPostgres(tokens);
  }
  return q;
}

function leadingWord(tokens: Token[]): string {
  for (const t of tokens) {
    if (t.kind === 'punct' && t.text === '(') continue;
    return t.kind === 'word' && !t.quoted ? t.text : '';
  }
  return '';
}

const isCall = (tokens: Token[], i: number) => tokens[i + 1]?.kind === 'punct' && tokens[i + 1].text === '(';
const lower = (t: Token) => t.text.toLowerCase();

function checkMysql(tokens: Token[]): void {
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i];
    if (t.kind !== 'word') continue;
    const w = lower(t);
    if (w === 'into' && !t.quoted) {
      const target = tokens[i + 1];
      if (target?.kind === 'word' && !target.quoted && (target.text === 'outfile' || target.text === 'dumpfile')) {
        throw forbidden(`SELECT … INTO ${target.text.toUpperCase()} writes a file on the database server and is refused in model queries.`, 'Remove the INTO clause: a model only returns rows.');
      }
    }
    if (MYSQL_FORBIDDEN.has(w) && isCall(tokens, i)) {
      throw forbidden(`${w.toUpperCase()}() reads or runs things on the database server and is refused in model queries.`, 'Select from tables and views only.');
    }
  }
}

function checkPostgres(tokens: Token[]): void {
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i];
    if (t.kind !== 'word' || !isCall(tokens, i)) continue;
    const w = lower(t);
    if (w.startsWith('dblink')) {
      throw forbidden(`${w}() opens a second database session that a read-only transaction does not cover; it is refused in model queries.`, 'Query the other database through its own connection and model.');
    }
    if (PG_FORBIDDEN.has(w)) {
      throw forbidden(`${w}() acts on the server's files, other sessions or the server itself; it is refused in model queries.`, 'Select from tables and views only.');
    }
    if (w === 'set_config' && !isLocalSetConfig(tokens, i + 1)) {
      throw forbidden(
        'set_config(…) outside the transaction (is_local false) changes the session; only set_config(name, value, true) is allowed in model queries.',
        'Pass true as the third argument, or remove the call.',
      );
    }
  }
}

/** set_config's argument list (from the "(" at `open`) ends with the literal `true`. */
function isLocalSetConfig(tokens: Token[], open: number): boolean {
  let depth = 0;
  let lastArgStart = open + 1;
  for (let j = open; j < tokens.length; j++) {
    const t = tokens[j];
    if (t.kind !== 'punct') continue;
    if (t.text === '(') depth++;
    else if (t.text === ')') {
      depth--;
      if (depth === 0) {
        const last = tokens.slice(lastArgStart, j);
        return last.length === 1 && last[0].kind === 'word' && !last[0].quoted && last[0].text === 'true';
      }
    } else if (t.text === ',' && depth === 1) lastArgStart = j + 1;
  }
  return false;
}

function forbidden(message: string, hint: string): ConnectorError {
  return new ConnectorError('forbidden_sql', message, { classification: 'fatal', status: 400, hint });
}

export function cancelled(): ConnectorError {
  return new ConnectorError('cancelled', 'The query was cancelled.', { classification: 'fatal', hint: 'The run was cancelled while reading the model.' });
}

export const PREVIEW_TIMEOUT_MS = 30_000;
export const DEFAULT_STATEMENT_TIMEOUT_MS = 300_000;
