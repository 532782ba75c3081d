// Lossless JSON for row values and mapped payloads.
//
// A JSON number a double cannot hold exactly (an integer beyond 2^53, a decimal with more than
// ~15 significant digits, 1e400) is parsed into a raw JSON value (`JSON.rawJSON(text)`, from the
// TC39 "JSON.parse source text access" proposal, in V8 since 11.4 / Node 21) that keeps its
// source text; every JSON.stringify — ours, fastify's, a driver's — writes that text back
// verbatim as a number. Numbers whose text a double reproduces exactly stay plain numbers.
// Chosen over a library (lossless-json, json-bigint): nothing to install, no wrapper type for the
// rest of the code base to learn, and no serializer anywhere that could turn a wrapper into
// `{"value": "…"}`; mysql2 uses the same mechanism for big integers in JSON columns.

/** A number kept as its exact JSON text. `typeof` is 'object'; JSON.stringify writes `rawJSON` as is. */
export interface RawJsonNumber {
  readonly rawJSON: string;
}

const J = JSON as JSON & { rawJSON(text: string): RawJsonNumber; isRawJSON(value: unknown): value is RawJsonNumber };

export const isRawJson = (value: unknown): value is RawJsonNumber => typeof value === 'object' && value !== null && J.isRawJSON(value);

/** Raw JSON value for `text`, which must be a valid JSON number. */
export const rawJsonNumber = (text: string): RawJsonNumber => J.rawJSON(text);

// Text in which some number may not survive a double round trip unchanged: 16+ significant
// digits, a trailing fractional zero, a tiny fraction, an exponent, or -0. Other texts take the
// fast path (plain JSON.parse); the reviver is only paid for when it can matter.
const MAYBE_INEXACT = /(?:\d\.?){16}|\.\d*0(?!\d)|\.0{6}|\d[eE]|-0(?![.\d])/;

function reviveNumber(this: unknown, _key: string, value: unknown, context?: { source?: string }): unknown {
  if (typeof value !== 'number' || context?.source === undefined) return value;
  return String(value) === context.source ? value : J.rawJSON(context.source);
}

// JSON strings (their text parses exactly, whatever it holds).
const JSON_STRINGS = /"(?:[^"\\]|\\.)*"/g;

/** JSON.parse that keeps every number exactly as written (see the module comment). */
export function parseJson(text: string): unknown {
  if (!MAYBE_INEXACT.test(text)) return JSON.parse(text);
  // The pattern may have matched inside a string (a timestamp's ".000Z", a phone number): only
  // the text outside strings can hold a number, so look there before paying for the reviver.
  if (text.includes('"') && !MAYBE_INEXACT.test(text.replace(JSON_STRINGS, '""'))) return JSON.parse(text);
  return JSON.parse(text, reviveNumber as never);
}

function bigintReplacer(_key: string, value: unknown): unknown {
  return typeof value === 'bigint' ? J.rawJSON(value.toString()) : value;
}

/** JSON.stringify that also writes bigint values as exact numbers. */
export function stringifyJson(value: unknown): string {
  try {
    return JSON.stringify(value);
  } catch (e) {
    if (e instanceof TypeError && /BigInt/i.test(e.message)) return JSON.stringify(value, bigintReplacer);
    throw e;
  }
}

/**
 * A mapped payload (destination field → value) as JSON text: what is staged, hashed and sent.
 * Exact numbers (raw JSON values, bigint) are written digit for digit.
 */
export function stringifyPayload(payload: Record<string, unknown>): string {
  return stringifyJson(payload);
}

/** The inverse of stringifyPayload: numbers a double cannot hold come back as raw JSON values. */
export function parsePayload(text: string): Record<string, unknown> {
  const v = parseJson(text);
  if (v === null || typeof v !== 'object' || Array.isArray(v) || isRawJson(v)) throw new TypeError('A payload must be a JSON object.');
  return v as Record<string, unknown>;
}

const JSON_NUMBER = /^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?$/;
const NUMERIC = /^([+-]?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/;

/**
 * A numeric string (`"+007.50"`, `".5"`, `"1E3"`, `"9007199254740993"`) as a JSON number: a plain
 * number when a double writes it back exactly as its canonical text, otherwise a raw JSON value
 * with that text (never rounded). Undefined when `text` is not a number.
 */
export function exactJsonNumber(text: string): number | RawJsonNumber | undefined {
  const fast = Number(text);
  if (Number.isFinite(fast) && String(fast) === text) return fast; // already canonical and exact: the common case
  if (JSON_NUMBER.test(text)) return J.rawJSON(text === '-0' ? '0' : text); // valid JSON as written: keep it
  const m = NUMERIC.exec(text.trim());
  if (!m || (!m[2] && !m[3])) return undefined;
  const int = m[2].replace(/^0+(?=\d)/, '') || '0';
  const frac = m[3] ?? '';
  const canon = `${m[1] === '-' ? '-' : ''}${int}${frac ? `.${frac}` : ''}${m[4] !== undefined ? `e${m[4]}` : ''}`;
  const n = Number(canon);
  if (String(n) === canon) return n;
  return J.rawJSON(canon === '-0' ? '0' : canon);
}
