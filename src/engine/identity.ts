import type { DestinationField } from '../connectors/types.ts';

// Destination identity. A destination record is identified by its match value compared the way
// the destination compares it: a field may declare its equality (HubSpot and Salesforce compare
// emails case-insensitively, ignoring surrounding spaces). The snapshot and the diff use the
// normalised value, the "match key", so `Ada@X.com ` and `ada@x.com` are one record.

export type Equality = NonNullable<DestinationField['equality']>;

/**
 * The match key of a match value: JSON of the value normalised by the field's equality
 * (`case_insensitive`: strings trimmed, NFC-normalised and lower-cased; `exact`: as is).
 * Returns null for a value that identifies nothing (null, undefined, empty or blank string).
 */
export function matchKeyOf(value: unknown, equality: Equality = 'exact'): string | null {
  if (value === null || value === undefined) return null;
  if (typeof value === 'string') {
    if (value.trim() === '') return null;
    return JSON.stringify(equality === 'case_insensitive' ? value.trim().normalize('NFC').toLowerCase() : value);
  }
  return JSON.stringify(value) ?? null;
}

/** The equality the destination declares for its match field (exact when it declares none). */
export function equalityOf(fields: DestinationField[], matchField: string): Equality {
  return fields.find((f) => f.name === matchField)?.equality ?? 'exact';
}

/**
 * Where a value holds text the control database cannot store (PostgreSQL text and jsonb refuse
 * U+0000 and lone surrogates): the JSON path of the first such string or key, or null when every
 * string is recordable. Such a row is made invalid before anything is sent.
 */
export function unrecordablePath(value: unknown, path = ''): string | null {
  if (typeof value === 'string') return recordable(value) ? null : path || '/';
  if (value === null || typeof value !== 'object') return null;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const p = unrecordablePath(value[i], `${path}/${i}`);
      if (p) return p;
    }
    return null;
  }
  for (const [k, v] of Object.entries(value)) {
    if (!recordable(k)) return `${path}/${k.replace(/\0/g, '\\u0000')}`;
    const p = unrecordablePath(v, `${path}/${k}`);
    if (p) return p;
  }
  return null;
}

const recordable = (s: string): boolean => !s.includes('\0') && s.isWellFormed();

// JSON.stringify writes U+0000 as \u0000 and a lone surrogate as \udXXX (ES2019 well-formed
// JSON.stringify); every other character of a string is written as itself or a short escape.
const UNRECORDABLE_ESCAPE = /\\u(?:0000|d[89a-f])/i;

/**
 * Whether the JSON text `JSON.stringify` wrote for a value may hold an unrecordable string (see
 * unrecordablePath). False means it holds none, so the walk can be skipped; true (rarely: such a
 * character, or a backslash followed by such text in the data) means walk the value to be sure.
 */
export function mayBeUnrecordable(json: string): boolean {
  return UNRECORDABLE_ESCAPE.test(json);
}
