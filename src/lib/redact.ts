// Redaction of secret values from anything Backhaul stores or sends on: rejected rows' error
// messages, run errors, webhook payloads, the row debugger's exchanges, logs.
//
// A destination can echo a credential in a form other than the one we hold: the header value
// itself, the Basic `user:pass` in base64, a form-encoded client secret, a JSON-escaped string.
// For each secret the redactor therefore matches:
//   - the value, its JSON-escaped form, its URL/form-encoded forms (percent-escapes in either case);
//   - the base64 and base64url encodings of each of those at the three byte alignments, so the
//     secret is found inside the encoding of a longer string (`Basic base64(user:pass)`): only the
//     characters that depend on the secret alone are matched, and the whole base64 run around a
//     match is replaced.
// Values shorter than MIN_SECRET_LENGTH are not redacted (they would blank out ordinary text).

export const REDACTED = '[REDACTED]';
export const MIN_SECRET_LENGTH = 4;

/** Header names whose values are credentials whatever the connection's secrets (always replaced). */
export const CREDENTIAL_HEADERS = ['authorization', 'proxy-authorization', 'cookie', 'set-cookie', 'x-api-key', 'api-key'];

export interface Redactor {
  /** `s` with every known form of every secret replaced by `[REDACTED]`. */
  text(s: string): string;
  /**
   * The first `n` characters of text(s), and whether text(s) is longer (the row debugger keeps
   * the head of request bodies of up to megabytes). Reads about `n` characters plus the longest
   * secret form when no secret lies near the head; otherwise redacts all of `s`.
   */
  head(s: string, n: number): { text: string; truncated: boolean };
  /** Headers (names lower-cased): credential headers replaced wholesale, other values through text(). */
  headers(h: Record<string, string>): Record<string, string>;
  /** A deep copy of a JSON-like value with every string (keys included) through text(). */
  value<T>(v: T): T;
  /**
   * Redacts an Error in place (message, stack, `hint`, and its `cause` chain) and returns it,
   * so a ConnectorError keeps its class and classification.
   */
  error<E>(e: E): E;
}

const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const formEncode = (s: string) => encodeURIComponent(s).replace(/%20/g, '+');
const lowerPercent = (s: string) => s.replace(/%[0-9A-F]{2}/g, (m) => m.toLowerCase());

/**
 * The base64 characters that depend only on `bytes` when `bytes` sits at byte offset
 * `align` (0, 1 or 2) of a longer encoded string, in standard and url-safe alphabets.
 */
function base64Cores(bytes: Buffer): string[] {
  const out: string[] = [];
  for (const align of [0, 1, 2]) {
    const enc = Buffer.concat([Buffer.alloc(align), bytes]).toString('base64').replace(/=+$/, '');
    const n = align + bytes.length;
    const start = align === 0 ? 0 : align === 1 ? 2 : 3;
    const rem = n % 3;
    const end = Math.floor(n / 3) * 4 + (rem === 1 ? 1 : rem === 2 ? 2 : 0);
    const core = enc.slice(start, end);
    // A short core would match unrelated base64 by chance.
    if (core.length >= 4) out.push(core, core.replace(/\+/g, '-').replace(/\//g, '_'));
  }
  return out;
}

/** Every textual form of one secret that the redactor looks for: [plain forms, base64 cores]. */
export function secretForms(value: string): { plain: string[]; base64: string[] } {
  const plain = new Set<string>([value]);
  // JSON as serializers write it: minimal escapes, `\/` (PHP's json_encode), `\uXXXX` for non-ASCII.
  const json = JSON.stringify(value).slice(1, -1);
  const ascii = json.replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  for (const j of [json, ascii]) {
    plain.add(j);
    plain.add(j.replace(/\//g, '\\/'));
    plain.add(j.replace(/\\u([0-9a-f]{4})/g, (_m, h: string) => `\\u${h.toUpperCase()}`));
  }
  // A lone surrogate cannot be URL-encoded (encodeURIComponent throws): such a value has no URL form.
  const urlForms = (() => {
    try {
      return [encodeURIComponent(value), formEncode(value), encodeURI(value)];
    } catch {
      return [];
    }
  })();
  for (const enc of urlForms) {
    plain.add(enc);
    plain.add(lowerPercent(enc));
  }
  const base64 = new Set<string>();
  for (const p of [value, ...urlForms.slice(0, 2)]) for (const c of base64Cores(Buffer.from(p, 'utf8'))) base64.add(c);
  return { plain: [...plain], base64: [...base64] };
}

interface Compiled {
  key: string;
  plain?: RegExp;
  base64?: RegExp;
  /** The longest form matched (characters). */
  longest: number;
}

function compile(values: string[]): Compiled {
  const usable = [...new Set(values.filter((v) => typeof v === 'string' && v.length >= MIN_SECRET_LENGTH))].sort();
  const key = usable.join('\u0000');
  if (!usable.length) return { key, longest: 0 };
  const plain = new Set<string>();
  const b64 = new Set<string>();
  for (const v of usable) {
    const f = secretForms(v);
    f.plain.forEach((p) => plain.add(p));
    f.base64.forEach((p) => b64.add(p));
  }
  // Longest first, so a longer form is replaced whole rather than the shorter one inside it.
  const alt = (set: Set<string>) => [...set].sort((a, b) => b.length - a.length).map(escapeRe).join('|');
  return {
    key,
    plain: new RegExp(alt(plain), 'g'),
    base64: b64.size ? new RegExp(alt(b64), 'g') : undefined,
    longest: Math.max(...[...plain, ...b64].map((f) => f.length)),
  };
}

const isB64 = (ch: number) =>
  (ch >= 65 && ch <= 90) || (ch >= 97 && ch <= 122) || (ch >= 48 && ch <= 57) || ch === 43 || ch === 47 || ch === 95 || ch === 45;

/**
 * Replaces the whole base64 run (letters, digits, `+/-_`, trailing `=`) around each match of
 * `cores` (expanded by hand: a regex with `[…]*` on both sides backtracks quadratically on long
 * base64 bodies).
 */
function replaceBase64Runs(s: string, cores: RegExp): string {
  let out = '';
  let last = 0;
  cores.lastIndex = 0;
  for (let m = cores.exec(s); m; m = cores.exec(s)) {
    let a = m.index;
    let b = m.index + m[0].length;
    while (a > last && isB64(s.charCodeAt(a - 1))) a--;
    while (b < s.length && isB64(s.charCodeAt(b))) b++;
    while (b < s.length && s.charCodeAt(b) === 61) b++;
    out += s.slice(last, a) + REDACTED;
    last = b;
    cores.lastIndex = b;
  }
  return last === 0 ? s : out + s.slice(last);
}

/**
 * A redactor for a set of secret values. `values` is read at every call (cheaply cached while it
 * returns the same values), so secrets that appear later, such as an OAuth access token fetched
 * mid-run, are covered as soon as they exist.
 * @param values the secrets (resolved values, not `{ env }` references); empty strings and values
 *   shorter than MIN_SECRET_LENGTH are ignored
 * @param secretHeaderNames extra header names (any case) whose values are always replaced whole
 */
export function secretRedactor(values: Iterable<string> | (() => Iterable<string>), secretHeaderNames: string[] = []): Redactor {
  const get = typeof values === 'function' ? values : () => values;
  let compiled: Compiled = { key: '', longest: 0 };
  const current = (): Compiled => {
    const vs = [...get()];
    const key = [...new Set(vs.filter((v) => typeof v === 'string' && v.length >= MIN_SECRET_LENGTH))].sort().join('\u0000');
    if (key !== compiled.key) compiled = compile(vs);
    return compiled;
  };
  const names = new Set([...CREDENTIAL_HEADERS, ...secretHeaderNames.map((n) => n.toLowerCase())]);

  const text = (s: string): string => {
    if (typeof s !== 'string' || !s) return s;
    const c = current();
    if (!c.plain) return s;
    const out = s.replace(c.plain, REDACTED);
    return c.base64 ? replaceBase64Runs(out, c.base64) : out;
  };

  // Only the head is redacted when the head comes out unchanged: then no form starts before `n`
  // in `s` (a form starting there ends inside the window, which reaches `longest` characters
  // further), and no base64 run replaced around a later match reaches back before `n` (the
  // window is extended to the end of the run it ends in, so such a match would lie inside it).
  // Anything found in the window: all of `s` is redacted, as text() would.
  const head = (s: string, n: number): { text: string; truncated: boolean } => {
    const c = current();
    if (c.plain && s.length > n) {
      let end = Math.min(s.length, n + c.longest);
      while (end < s.length && (isB64(s.charCodeAt(end)) || s.charCodeAt(end) === 61)) end++;
      if (end < s.length) {
        const window = s.slice(0, end);
        if (text(window) === window) return { text: s.slice(0, n), truncated: true };
      }
    }
    const all = text(s);
    return all.length > n ? { text: all.slice(0, n), truncated: true } : { text: all, truncated: false };
  };

  const value = <T>(v: T): T => {
    if (typeof v === 'string') return text(v) as T;
    if (Array.isArray(v)) return v.map((x) => value(x)) as T;
    if (v && typeof v === 'object' && (Object.getPrototypeOf(v) === Object.prototype || Object.getPrototypeOf(v) === null)) {
      return Object.fromEntries(Object.entries(v).map(([k, x]) => [text(k), value(x)])) as T;
    }
    return v;
  };

  const error = <E>(e: E): E => {
    const seen = new Set<unknown>();
    let cur: unknown = e;
    while (cur instanceof Error && !seen.has(cur)) {
      seen.add(cur);
      const err = cur as Error & { hint?: string; errors?: { path: string; message: string }[] };
      try {
        err.message = text(err.message);
        if (err.stack) err.stack = text(err.stack);
        if (typeof err.hint === 'string') err.hint = text(err.hint);
        if (Array.isArray(err.errors)) err.errors = err.errors.map((x) => ({ ...x, message: text(x.message) }));
      } catch {
        // a frozen error cannot be rewritten; its message never came from a destination
      }
      cur = err.cause;
    }
    return e;
  };

  return {
    text,
    head,
    headers: (h) => Object.fromEntries(Object.entries(h).map(([k, v]) => [k.toLowerCase(), names.has(k.toLowerCase()) ? REDACTED : text(String(v))])),
    value,
    error,
  };
}

/** A redactor that changes nothing (no secrets). */
export const NO_SECRETS: Redactor = secretRedactor([]);

/**
 * A URL safe to show in an error or a log line when the URL itself is a credential (a Slack
 * incoming webhook's path is its secret): the origin only, e.g. `https://hooks.slack.com`.
 */
export function safeOrigin(url: string | URL): string {
  try {
    const u = typeof url === 'string' ? new URL(url) : url;
    return `${u.protocol}//${u.host}`;
  } catch {
    return '(invalid URL)';
  }
}
