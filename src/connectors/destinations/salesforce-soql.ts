import { ConnectorError } from '../../errors.ts';

// Building SOQL safely. Values are quoted string literals with SOQL's escape sequences; names
// (objects, fields, relationship paths) cannot be escaped, so they are validated instead.
// Source: SOQL and SOSL Reference, "Quoted String Escape Sequences" and "Comparison Operators"
// (IN lists; string comparisons are case-insensitive except on case-sensitive unique fields).

const NAME = /^[A-Za-z][A-Za-z0-9_]{0,79}$/;
const PATH = /^[A-Za-z][A-Za-z0-9_]{0,79}(\.[A-Za-z][A-Za-z0-9_]{0,79}){0,4}$/;

/** Throws a fatal `invalid_name` unless `name` is a Salesforce API name (or, with `path`, a relationship path like `Owner.Email`). */
export function assertName(name: string, what: string, path = false): string {
  if (!(path ? PATH : NAME).test(name)) {
    throw new ConnectorError('invalid_name', `${what} "${name}" is not a Salesforce API name.`, {
      classification: 'fatal',
      status: 400,
      hint: 'Use the API name from the object\'s fields (letters, digits and underscores, e.g. External_Id__c; relationship paths like Owner.Email).',
    });
  }
  return name;
}

const ESCAPES: Record<string, string> = { '\\': '\\\\', "'": "\\'", '"': '\\"', '\n': '\\n', '\r': '\\r', '\t': '\\t', '\b': '\\b', '\f': '\\f' };

/** A SOQL string literal: `'…'` with backslash escapes for quotes, backslash and control characters. */
export function soqlString(value: string): string {
  return `'${value.replace(/[\\'"\n\r\t\b\f]/g, (c) => ESCAPES[c])}'`;
}

/** Field types whose literals are written bare (numbers, booleans, dates), per the SOQL reference. */
const BARE = new Set(['int', 'double', 'currency', 'percent', 'long', 'boolean', 'date', 'datetime', 'time']);

/**
 * A literal for a value compared with a field of Salesforce type `sfType`: numbers and booleans
 * bare (validated), dates bare (YYYY-MM-DD / ISO-8601), everything else quoted. Returns undefined
 * for a value that cannot be such a literal (it can match nothing).
 */
export function soqlLiteral(value: string, sfType: string | undefined): string | undefined {
  if (!sfType || !BARE.has(sfType)) return soqlString(value);
  const v = value.trim();
  switch (sfType) {
    case 'boolean':
      return /^(true|false)$/i.test(v) ? v.toLowerCase() : undefined;
    case 'date':
      return /^\d{4}-\d{2}-\d{2}$/.test(v) ? v : undefined;
    case 'datetime':
      return /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/.test(v) ? v : undefined;
    case 'time':
      return undefined;
    default:
      return /^-?\d+(\.\d+)?$/.test(v) ? v : undefined;
  }
}

/**
 * Splits `literals` into `SELECT … WHERE field IN (…)` statements, each at most `maxChars` long
 * (SOQL statements default to 100,000 characters; a GET URL is far shorter, so keep this small).
 */
export function inQueries(select: string[], object: string, field: string, literals: string[], maxChars = 6000): string[] {
  const head = `SELECT ${select.join(', ')} FROM ${object} WHERE ${field} IN (`;
  const out: string[] = [];
  let cur: string[] = [];
  let len = head.length + 1;
  for (const lit of literals) {
    if (cur.length && (len + lit.length + 1 > maxChars || cur.length >= 500)) {
      out.push(`${head}${cur.join(',')})`);
      cur = [];
      len = head.length + 1;
    }
    cur.push(lit);
    len += lit.length + 1;
  }
  if (cur.length) out.push(`${head}${cur.join(',')})`);
  return out;
}

/** The value at a relationship path (`Owner.Email`) of a SOQL result record. */
export function pathValue(record: Record<string, unknown>, path: string): unknown {
  let cur: unknown = record;
  for (const part of path.split('.')) {
    if (!cur || typeof cur !== 'object') return undefined;
    const obj = cur as Record<string, unknown>;
    // Salesforce answers with the field's canonical case; accept any case from the user.
    const key = part in obj ? part : Object.keys(obj).find((k) => k.toLowerCase() === part.toLowerCase());
    cur = key === undefined ? undefined : obj[key];
  }
  return cur;
}
