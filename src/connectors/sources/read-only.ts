import { ConnectorError } from '../../errors.ts';
import { leadingKeyword, normaliseSql, readOnlyViolation } from './sql-errors.ts';

// Model SQL runs inside a read-only transaction, which is what actually stops writes. The
// keyword check below is a second layer for what a read-only transaction cannot catch: MySQL
// and MariaDB run DDL (CREATE, DROP…) after an implicit COMMIT, outside the transaction.
const READ_KEYWORDS = new Set(['select', 'with', 'values', 'table']);
const WRITE_KEYWORDS = new Set([
  'insert', 'update', 'delete', 'merge', 'replace', 'upsert', 'create', 'drop', 'alter', 'truncate', 'rename', 'grant',
  'revoke', 'call', 'do', 'load', 'copy', 'set', 'lock', 'unlock', 'commit', 'rollback', 'begin', 'start', 'end',
  'savepoint', 'release', 'prepare', 'execute', 'deallocate', 'vacuum', 'analyze', 'optimize', 'repair', 'cluster',
  'reindex', 'refresh', 'comment', 'handler', 'flush', 'kill', 'reset', 'purge', 'install', 'uninstall', 'xa',
  'import', 'discard', 'listen', 'notify', 'checkpoint', 'reassign', 'security',
]);

/** Normalised single statement, or a ConnectorError explaining why it cannot be a model query. */
export function prepareModelSql(sql: string): string {
  const q = normaliseSql(sql ?? '');
  if (!q) {
    throw new ConnectorError('sql_error', 'The query is empty.', { classification: 'fatal', status: 400, hint: 'Write a SELECT query.' });
  }
  const kw = leadingKeyword(q);
  if (WRITE_KEYWORDS.has(kw)) throw readOnlyViolation(kw);
  if (!READ_KEYWORDS.has(kw)) {
    throw new ConnectorError('sql_error', `A model query must be a SELECT (or WITH … SELECT); it starts with "${(kw || q).slice(0, 40)}".`, {
      classification: 'fatal',
      status: 400,
      hint: 'Write the model as a single SELECT query.',
    });
  }
  return q;
}

export function cancelled(): ConnectorError {
  return new ConnectorError('cancelled', 'The query was cancelled.', { classification: 'fatal', hint: 'The run was cancelled while reading the model.' });
}

export const PREVIEW_TIMEOUT_MS = 30_000;
export const DEFAULT_STATEMENT_TIMEOUT_MS = 300_000;
