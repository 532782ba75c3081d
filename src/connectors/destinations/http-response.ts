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

/** The most useful human message in an error response (common API shapes), first 500 chars. */
export function errorMessage(status: number, body: Buffer): string {
  const text = body.toString('utf8');
  const j = parseJson(text) as Record<string, unknown> | undefined;
  let msg: unknown;
  if (j && typeof j === 'object') {
    const err = j.error as Record<string, unknown> | string | undefined;
    const errors = Array.isArray(j.errors) ? (j.errors as Record<string, unknown>[]) : undefined;
    msg =
      j.message ??
      (typeof err === 'object' && err ? err.message ?? err.description : undefined) ??
      j.error_description ??
      (typeof err === 'string' ? err : undefined) ??
      j.detail ??
      (errors?.length ? errors.map((e) => (typeof e === 'string' ? e : e.message ?? JSON.stringify(e))).join('; ') : undefined) ??
      j.title;
  }
  const s = typeof msg === 'string' && msg ? msg : typeof msg === 'object' && msg ? JSON.stringify(msg) : text.trim();
  return (s || `HTTP ${status}`).slice(0, MAX_ROW_MESSAGE);
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

const ALWAYS_REDACTED = new Set(['authorization', 'proxy-authorization', 'cookie', 'set-cookie', 'x-api-key', 'api-key']);

export interface Redactor {
  headers(h: Record<string, string>): Record<string, string>;
  text(s: string): string;
}

export function redactor(secretHeaderNames: string[], secretValues: () => string[]): Redactor {
  const names = new Set([...ALWAYS_REDACTED, ...secretHeaderNames]);
  const text = (s: string) => {
    let out = s;
    for (const v of secretValues()) if (out.includes(v)) out = out.split(v).join('[REDACTED]');
    return out;
  };
  return {
    headers: (h) => Object.fromEntries(Object.entries(h).map(([k, v]) => [k.toLowerCase(), names.has(k.toLowerCase()) ? '[REDACTED]' : text(v)])),
    text,
  };
}

export function truncate(body: string): string {
  return body.length > MAX_EXCHANGE_BODY ? `${body.slice(0, MAX_EXCHANGE_BODY)}…[truncated ${body.length - MAX_EXCHANGE_BODY} chars]` : body;
}

export function exchange(
  r: Redactor,
  req: { method: string; url: string; headers: Record<string, string>; body?: string },
  res: { status: number; headers: Record<string, string>; body: Buffer } | undefined,
  durationMs: number,
  rowIndexes: number[],
): WireExchange {
  return {
    request: { method: req.method, url: r.text(req.url), headers: r.headers(req.headers), body: req.body === undefined ? undefined : truncate(r.text(req.body)) },
    response: res && { status: res.status, headers: r.headers(res.headers), body: truncate(r.text(res.body.toString('utf8'))) },
    durationMs,
    rowIndexes,
  };
}
