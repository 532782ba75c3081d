// The CLI's client of a running Backhaul's API (BACKHAUL_URL, BACKHAUL_API_KEY): shared by
// `backhaul run` (cli.ts) and export/plan/apply (cli-declarative.ts). Plain fetch, bounded.

/** The API's base URL: BACKHAUL_URL without trailing slashes (default http://127.0.0.1:3000). */
export function apiBase(): string {
  return (process.env.BACKHAUL_URL || 'http://127.0.0.1:3000').replace(/\/+$/, '');
}

/** The server could not be reached (refused, DNS, timeout): message names BACKHAUL_URL. */
export class ApiUnreachable extends Error {}

/** An answer: its status, body text and the body parsed as JSON (undefined when it is not JSON). */
export interface ApiAnswer {
  ok: boolean;
  status: number;
  text: string;
  json: any;
}

/**
 * One API call with the bearer `key`; JSON body when `body` is given. Bounded by `timeoutMs`.
 * Throws ApiUnreachable when no answer came; any HTTP status is returned, not thrown.
 */
export async function apiCall(method: string, path: string, o: { key: string; body?: unknown; headers?: Record<string, string>; timeoutMs: number }): Promise<ApiAnswer> {
  const base = apiBase();
  let res: Response;
  try {
    res = await fetch(base + path, {
      method,
      headers: { authorization: `Bearer ${o.key}`, ...(o.body === undefined ? {} : { 'content-type': 'application/json' }), ...o.headers },
      body: o.body === undefined ? undefined : JSON.stringify(o.body),
      signal: AbortSignal.timeout(o.timeoutMs),
    });
  } catch (e) {
    throw new ApiUnreachable(`cannot reach ${base} (BACKHAUL_URL): ${(e as Error).message}`);
  }
  const text = await res.text();
  let json: any;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { ok: res.ok, status: res.status, text, json };
}

/** One line for a refused call: `METHOD path: status detail (code)`. */
export function problemLine(method: string, path: string, a: ApiAnswer): string {
  return `${method} ${path}: ${a.status} ${a.json?.detail ?? a.json?.title ?? a.text.slice(0, 200)}${a.json?.code ? ` (${a.json.code})` : ''}`;
}
