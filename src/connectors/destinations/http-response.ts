import type { Redactor } from '../../lib/redact.ts';
import type { WireExchange } from '../types.ts';

// Reading destination responses: error messages, JSON pointers, and redacted exchanges for the
// row debugger.

export const MAX_EXCHANGE_BODY = 64 * 1024;
export const MAX_ROW_MESSAGE = 500;

export function parseJson(body: Buffer | string): unknown {
  try {
    return JSON.parse(typeof body === 'string' ? body : body.toString('utf8'));
  } catch {
    return undefined;
  }
}

/**
 * The destination's own message in a response body, from the fields common APIs use (`message`,
 * `error` as a string or `{message|description}`, `error_description`, `detail`, `errors[]`,
 * `title`); undefined when the body has none of them.
 */
export function destinationMessage(body: Buffer | string | unknown): string | undefined {
  const j = (Buffer.isBuffer(body) || typeof body === 'string' ? parseJson(body) : body) as Record<string, unknown> | undefined;
  if (!j || typeof j !== 'object' || Array.isArray(j)) return undefined;
  const err = j.error as Record<string, unknown> | string | undefined;
  const errors = Array.isArray(j.errors) ? (j.errors as Record<string, unknown>[]) : undefined;
  const msg: unknown =
    j.message ??
    (typeof err === 'object' && err ? err.message ?? err.description : undefined) ??
    j.error_description ??
    (typeof err === 'string' ? err : undefined) ??
    j.detail ??
    (errors?.length ? errors.map((e) => (typeof e === 'string' ? e : e?.message ?? JSON.stringify(e))).join('; ') : undefined) ??
    j.title;
  const s = typeof msg === 'string' ? msg : typeof msg === 'object' && msg ? JSON.stringify(msg) : undefined;
  return s ? s.slice(0, MAX_ROW_MESSAGE) : undefined;
}

/** The most useful human message in an error response (common API shapes), first 500 chars. */
export function errorMessage(status: number, body: Buffer): string {
  return destinationMessage(body) ?? (body.toString('utf8').trim() || `HTTP ${status}`).slice(0, MAX_ROW_MESSAGE);
}

/** RFC 6901 JSON pointer; undefined when the path does not exist. */
export function jsonPointer(doc: unknown, pointer: string): unknown {
  if (pointer === '' || pointer === '/') return pointer === '' ? doc : (doc as Record<string, unknown>)?.[''];
  if (!pointer.startsWith('/')) pointer = `/${pointer}`;
  let cur: unknown = doc;
  for (const raw of pointer.slice(1).split('/')) {
    const key = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string, unknown>)[key];
  }
  return cur;
}

/**
 * A body as an exchange reports it: redacted, its head when longer than MAX_EXCHANGE_BODY (with
 * the whole body's length). The marker is ASCII: a two-byte character after an ASCII head makes
 * whoever reads the text convert all 64 KB of it to two-byte (0.5 ms per batch in the row debugger).
 */
export function truncate(r: Redactor, body: string): string {
  const h = r.head(body, MAX_EXCHANGE_BODY);
  return h.truncated ? `${h.text}...[truncated: ${body.length} chars in all]` : h.text;
}

export function exchange(
  r: Redactor,
  req: { method: string; url: string; headers: Record<string, string>; body?: string },
  res: { status: number; headers: Record<string, string>; body: Buffer } | undefined,
  durationMs: number,
  rowIndexes: number[],
): WireExchange {
  return {
    request: { method: req.method, url: r.text(req.url), headers: r.headers(req.headers), body: req.body === undefined ? undefined : truncate(r, req.body) },
    response: res && { status: res.status, headers: r.headers(res.headers), body: truncate(r, res.body.toString('utf8')) },
    durationMs,
    rowIndexes,
  };
}

/** Where a 2xx answer says the request failed (operation config `okPointer` / `errorPointer`). */
export interface BodyRules {
  okPointer?: string;
  errorPointer?: string;
}

const isFalsyError = (v: unknown) => v === undefined || v === null || v === '' || v === false || (Array.isArray(v) && v.length === 0);

/**
 * Whether a 2xx response body reports a failure. With `okPointer`, the value there must be `true`;
 * with `errorPointer`, a value there other than null/false/""/[] is a failure. With neither, the
 * envelope convention of chat and cloud APIs applies: a top-level `"ok": false` (Slack Web API,
 * https://api.slack.com/web#responses) or `"success": false` (Cloudflare API v4) is a failure.
 * The message is the value at `errorPointer`, else the body's own message (destinationMessage).
 */
export function bodyFailure(rules: BodyRules, body: Buffer): { message: string } | undefined {
  const text = body.toString('utf8');
  if (!text.trim()) {
    return rules.okPointer ? { message: `The response is empty; expected true at "${rules.okPointer}".` } : undefined;
  }
  const doc = parseJson(text);
  let failed: boolean;
  if (rules.okPointer || rules.errorPointer) {
    failed = (rules.okPointer !== undefined && jsonPointer(doc, rules.okPointer) !== true) || (rules.errorPointer !== undefined && !isFalsyError(jsonPointer(doc, rules.errorPointer)));
  } else {
    const j = doc as Record<string, unknown> | undefined;
    failed = !!j && typeof j === 'object' && !Array.isArray(j) && (j.ok === false || j.success === false);
  }
  if (!failed) return undefined;
  const at = rules.errorPointer !== undefined ? jsonPointer(doc, rules.errorPointer) : undefined;
  const fromPointer = typeof at === 'string' ? at : !isFalsyError(at) ? JSON.stringify(at) : undefined;
  const message = fromPointer ?? destinationMessage(doc) ?? (rules.okPointer ? `The response has no true at "${rules.okPointer}".` : 'The response body reports a failure.');
  return { message: message.slice(0, MAX_ROW_MESSAGE) };
}

// Error codes and phrases that APIs answering 200 use for bad credentials and for throttling
// (e.g. Slack: not_authed, invalid_auth, token_revoked, account_inactive, missing_scope; ratelimited).
const AUTH_ERROR = /\b(not_?authed|invalid_?auth|auth(entication|orization)?[_ ]?(failed|required|error|invalid)|unauthori[sz]ed|invalid[_ ]?(api[_ ]?key|access[_ ]?token|token|credentials?|client|signature)|(token|api[_ ]?key|credentials?)[_ ]?(revoked|expired|invalid|missing)|account[_ ]?(inactive|disabled|suspended)|missing[_ ]?scope|no[_ ]?permission|permission[_ ]?denied|access[_ ]?denied|forbidden)\b/i;
const THROTTLE_ERROR = /\b(rate[_ ]?limit(ed)?|ratelimited|too[_ ]?many[_ ]?requests|throttl(ed|ing)|over[_ ]?quota|quota[_ ]?(exceeded|reached|exhausted))\b/i;

/**
 * How an error reported in a 2xx body is treated: `auth` fails the run (like a 401: every other
 * request would fail too), `throttle` is retried (like a 429), anything else rejects the row(s).
 */
export function classifyBodyError(message: string): 'auth' | 'throttle' | 'other' {
  if (AUTH_ERROR.test(message)) return 'auth';
  if (THROTTLE_ERROR.test(message)) return 'throttle';
  return 'other';
}
