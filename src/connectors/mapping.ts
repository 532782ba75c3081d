import { ConnectorError } from '../errors.ts';
import { exactJsonNumber, isRawJson } from '../lib/json.ts';
import { compileTemplate } from './template.ts';
import type { ColumnType, DestinationField, Row } from './types.ts';

// Mapping evaluation: turns a model row into a destination payload. Compiled once per run into
// one closure per field, so the per-row cost is a loop over small functions. A value that cannot
// be coerced to its field's type makes the row invalid (returned, never thrown).
//
// Numbers are never rounded: an integer beyond 2^53 or a decimal a double cannot hold (a bigint
// or numeric column arrives as a string, a number inside a json column as a raw JSON value) is
// sent to an integer/decimal field as a JSON number with its exact digits (src/lib/json.ts:
// a raw JSON value, written verbatim by every JSON.stringify), and as its text to a string field.

export interface LookupSpec {
  object: string;
  matchField: string;
  sourceColumn: string;
  resultField: string;
  /** Compare case-insensitively and trimmed (e-mails). */
  caseInsensitive?: boolean;
  /** No match: the row is invalid (`invalid`, default) or the field is left out of the payload (`skip_field`). */
  onMissing?: 'invalid' | 'skip_field';
}

/** What a lookup resolver answers for one source value. */
export type LookupOutcome = { ok: true; value: unknown } | { ok: false; code: 'lookup_not_found' | 'lookup_ambiguous' | string; message: string };

export type MappingSource = { column: string } | { static: unknown } | { template: string } | { lookup: LookupSpec };

export interface MappingSpec {
  destinationField: string;
  source: MappingSource;
}

export type MappingResult = { ok: true; payload: Record<string, unknown> } | { ok: false; code: string; message: string };

export interface CompileMappingsOptions {
  /** The model's columns: unknown columns (mapping or template) become compile-time errors. */
  columns?: Iterable<string>;
  /** Resolves a lookup mapping for a row (returns the destination value). Prefer `lookup`. */
  resolveLookup?: (spec: LookupSpec, row: Row) => unknown;
  /**
   * Resolves a lookup mapping's source value (never null or '') synchronously, from values the
   * engine resolved beforehand (src/engine/lookups.ts, LookupResolver.prepare). A failed outcome
   * makes the row invalid with its code and message, except `lookup_not_found` on a mapping with
   * `onMissing: "skip_field"`, which leaves the field out of the payload.
   */
  lookup?: (spec: LookupSpec, value: unknown) => LookupOutcome;
}

/** A lookup that failed for a row: the row is invalid with this code. */
class LookupFailure extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

const INVALID = Symbol('invalid');
/** A lookup mapping with onMissing skip_field found nothing: the field is left out. */
const SKIP = Symbol('skip');
type Coercer = (v: unknown) => unknown;

const TYPE_PHRASE: Record<ColumnType, string> = {
  string: 'a string',
  integer: 'an integer',
  decimal: 'a decimal number',
  boolean: 'a boolean',
  timestamp: 'a timestamp',
  date: 'a date (YYYY-MM-DD)',
  json: 'JSON',
};

const TRUE = new Set(['true', 't', 'yes', 'y', '1', 'on']);
const FALSE = new Set(['false', 'f', 'no', 'n', '0', 'off']);
const ISO_UTC = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/;
const ZONELESS = /^\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?$/;
const DATE_ONLY = /^(\d{4})-(\d\d)-(\d\d)$/;

function validDate(s: string): boolean {
  const m = DATE_ONLY.exec(s);
  if (!m) return false;
  const d = new Date(Date.UTC(+m[1], +m[2] - 1, +m[3]));
  return d.getUTCFullYear() === +m[1] && d.getUTCMonth() === +m[2] - 1 && d.getUTCDate() === +m[3];
}

function toTimestamp(v: unknown): unknown {
  if (isRawJson(v)) v = Number(v.rawJSON);
  if (v instanceof Date) return Number.isNaN(v.getTime()) ? INVALID : v.toISOString();
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) return INVALID;
    // Epoch seconds or milliseconds: below 1e11 can only be seconds (1e11 ms is 1973).
    const d = new Date(Math.abs(v) < 1e11 ? v * 1000 : v);
    return Number.isNaN(d.getTime()) ? INVALID : d.toISOString();
  }
  if (typeof v !== 'string') return INVALID;
  const s = v.trim();
  if (ISO_UTC.test(s)) return s; // keeps sub-millisecond digits
  if (DATE_ONLY.test(s)) return validDate(s) ? `${s}T00:00:00.000Z` : INVALID;
  // A timestamp without a zone is UTC (as sources deliver them), never the server's local time.
  const withZone = ZONELESS.test(s) ? `${s.replace(' ', 'T')}Z` : s;
  if (!/^\d{4}-\d\d-\d\d/.test(withZone) && !/\d{4}/.test(withZone)) return INVALID;
  const t = Date.parse(withZone);
  return Number.isNaN(t) ? INVALID : new Date(t).toISOString();
}

/** Numeric text of a value that may be a number in disguise (string, bigint, raw JSON number). */
const numericText = (v: unknown): string | undefined =>
  typeof v === 'string' ? v : isRawJson(v) ? v.rawJSON : typeof v === 'bigint' ? v.toString() : undefined;

const INTEGER_TEXT = /^([+-]?)0*(\d+)(?:\.0*)?$/;
const DECIMAL_TEXT = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

export const COERCERS: Record<ColumnType, Coercer> = {
  string: (v) => (typeof v === 'string' ? v : v instanceof Date ? v.toISOString() : typeof v === 'object' ? JSON.stringify(v) : String(v)),
  integer: (v) => {
    if (typeof v === 'number') return Number.isInteger(v) ? v : INVALID;
    const text = numericText(v);
    if (text === undefined) return INVALID;
    const m = INTEGER_TEXT.exec(text.trim());
    if (!m) return INVALID;
    // Beyond 2^53: a raw JSON number with the exact digits.
    return exactJsonNumber(`${m[1] === '-' && m[2] !== '0' ? '-' : ''}${m[2]}`) ?? INVALID;
  },
  decimal: (v) => {
    if (typeof v === 'number') return Number.isFinite(v) ? v : INVALID;
    const text = numericText(v)?.trim();
    if (text === undefined || !DECIMAL_TEXT.test(text)) return INVALID;
    // A plain number when a double writes it back digit for digit, else the exact text as a JSON number.
    return exactJsonNumber(text) ?? INVALID;
  },
  boolean: (v) => {
    if (typeof v === 'boolean') return v;
    if (isRawJson(v)) v = Number(v.rawJSON);
    if (typeof v === 'number') return v === 1 ? true : v === 0 ? false : INVALID;
    if (typeof v !== 'string') return INVALID;
    const s = v.trim().toLowerCase();
    return TRUE.has(s) ? true : FALSE.has(s) ? false : INVALID;
  },
  timestamp: toTimestamp,
  date: (v) => {
    if (typeof v === 'string' && validDate(v.trim())) return v.trim();
    if (typeof v === 'string' && ZONELESS.test(v.trim())) return validDate(v.trim().slice(0, 10)) ? v.trim().slice(0, 10) : INVALID;
    if (typeof v === 'number') return INVALID;
    const ts = toTimestamp(v);
    return ts === INVALID ? INVALID : (ts as string).slice(0, 10);
  },
  json: (v) => v,
};

function show(v: unknown): string {
  let s: string;
  try {
    s = typeof v === 'bigint' ? v.toString() : JSON.stringify(v) ?? String(v);
  } catch {
    s = String(v);
  }
  return s.length > 100 ? `${s.slice(0, 100)}…` : s;
}

/** Coerces one value to a ColumnType; null/undefined (and '' for non-string types) become null. */
export function coerceValue(value: unknown, type: ColumnType): { ok: true; value: unknown } | { ok: false; reason: string } {
  if (value === null || value === undefined || (value === '' && type !== 'string' && type !== 'json')) return { ok: true, value: null };
  const out = COERCERS[type](value);
  return out === INVALID ? { ok: false, reason: `${show(value)} is not ${TYPE_PHRASE[type]}` } : { ok: true, value: out };
}

function invalidMapping(message: string, hint?: string): ConnectorError {
  return new ConnectorError('invalid_mapping', message, { classification: 'fatal', status: 400, hint });
}

type FieldTypes = Record<string, ColumnType> | DestinationField[];

export function compileMappings(mappings: MappingSpec[], fieldTypes?: FieldTypes, opts: CompileMappingsOptions = {}): (row: Row) => MappingResult {
  const types: Record<string, ColumnType> = Array.isArray(fieldTypes)
    ? Object.fromEntries(fieldTypes.map((f) => [f.name, f.type]))
    : { ...(fieldTypes ?? {}) };
  const known = opts.columns ? new Set(opts.columns) : undefined;
  const seen = new Set<string>();
  type Step = { field: string; get: (row: Row) => unknown; coerce?: Coercer; isStatic: boolean };
  const steps: Step[] = mappings.map((m) => {
    const field = m.destinationField;
    if (seen.has(field)) throw invalidMapping(`Destination field "${field}" is mapped more than once.`);
    seen.add(field);
    const type = types[field];
    const coerce = type && type !== 'json' ? COERCERS[type] : undefined;
    const src = m.source as Record<string, unknown>;
    if ('column' in src) {
      const col = String(src.column);
      if (known && !known.has(col)) throw invalidMapping(`Field "${field}" is mapped from column "${col}", which the model does not return.`, 'Map it from one of the model\'s columns.');
      return { field, get: (row) => (Object.hasOwn(row, col) ? row[col] : undefined), coerce, isStatic: false };
    }
    if ('static' in src) {
      const c = coerceValue(src.static, type ?? 'json');
      if (!c.ok) throw invalidMapping(`field "${field}": static value ${c.reason}.`);
      return { field, get: () => c.value, isStatic: true };
    }
    if ('template' in src) {
      const tpl = compileTemplate(String(src.template), { columns: known });
      return { field, get: (row) => tpl.render(row), coerce, isStatic: false };
    }
    if ('lookup' in src) {
      const spec = src.lookup as LookupSpec;
      if (known && !known.has(spec.sourceColumn)) {
        throw invalidMapping(`Field "${field}" looks up column "${spec.sourceColumn}", which the model does not return.`, 'Look up one of the model\'s columns.');
      }
      const lookup = opts.lookup;
      if (lookup) {
        const col = spec.sourceColumn;
        const skip = spec.onMissing === 'skip_field';
        const get = (row: Row) => {
          const raw = Object.hasOwn(row, col) ? row[col] : undefined;
          if (raw === null || raw === undefined || raw === '') return null;
          const r = lookup(spec, raw);
          if (r.ok) return r.value;
          if (skip && r.code === 'lookup_not_found') return SKIP;
          throw new LookupFailure(r.code, r.message);
        };
        return { field, get, coerce, isStatic: false };
      }
      const resolve = opts.resolveLookup;
      if (!resolve) {
        throw new ConnectorError('lookup_not_supported', `Field "${field}" uses a lookup mapping, which this engine cannot evaluate yet.`, {
          classification: 'fatal',
          status: 400,
          hint: 'Map the field from a column, a static value or a template instead.',
        });
      }
      return { field, get: (row) => resolve(spec, row), coerce, isStatic: false };
    }
    throw invalidMapping(`Field "${field}" has no source: use column, static, template or lookup.`);
  });

  return (row: Row): MappingResult => {
    const payload: Record<string, unknown> = {};
    for (const s of steps) {
      let v: unknown;
      try {
        v = s.get(row);
      } catch (e) {
        return { ok: false, code: (e as ConnectorError).code ?? 'template_error', message: `field "${s.field}": ${(e as Error).message}` };
      }
      if (v === undefined || v === null) {
        payload[s.field] = null;
        continue;
      }
      if (v === SKIP) continue;
      if (s.coerce && !s.isStatic) {
        if (v === '' && types[s.field] !== 'string') {
          payload[s.field] = null;
          continue;
        }
        const out = s.coerce(v);
        if (out === INVALID) return { ok: false, code: 'invalid_value', message: `field "${s.field}": ${show(v)} is not ${TYPE_PHRASE[types[s.field]]}` };
        v = out;
      }
      payload[s.field] = v;
    }
    return { ok: true, payload };
  };
}
