// A small SQL lexer, per dialect, for the model-query guard (read-only.ts). It only has to find
// word and punctuation tokens outside strings and comments exactly where the server would: a
// guard that skips text the server executes is no guard. Rules, from the manuals:
// - PostgreSQL ("Lexical Structure", 4.1): '…' with '' (standard_conforming_strings is forced on
//   for model sessions, so a backslash is literal), E'…' with backslash escapes, $tag$…$tag$,
//   "…" identifiers with "", U&"…" identifiers with \XXXX / \+XXXXXX escapes (UESCAPE 'c'),
//   -- to end of line, /* … */ nesting.
// - MySQL/MariaDB ("Comments", "String Literals", "Schema Object Names"): '…' and "…" with
//   backslash escapes (unless NO_BACKSLASH_ESCAPES) and doubled quotes, `…` identifiers with ``,
//   # and "-- " (a space or control character after the dashes) to end of line, /* … */ not
//   nested, and /*! … */, /*M! … */ executable comments, whose content the server runs.

export type SqlDialect = 'postgres' | 'mysql';

export interface Token {
  /** word: unquoted or quoted identifier/keyword (lower-cased when unquoted); punct: one character; string; number. */
  kind: 'word' | 'punct' | 'string' | 'number';
  text: string;
  /** A quoted identifier ("…", `…`, U&"…"). */
  quoted?: boolean;
}

export interface LexResult {
  tokens: Token[];
  /** Executable comments found (MySQL/MariaDB `/*! … *\/`, `/*M! … *\/`), verbatim. */
  executableComments: string[];
}

const WORD_START = /[\p{L}_]/u;
const WORD_PART = /[\p{L}\p{N}_$]/u;

export interface LexOptions {
  /** MySQL: whether a backslash escapes the next character in a string (false under NO_BACKSLASH_ESCAPES). */
  backslashEscapes?: boolean;
}

export function lexSql(sql: string, dialect: SqlDialect, opts: LexOptions = {}): LexResult {
  const tokens: Token[] = [];
  const executableComments: string[] = [];
  const backslash = opts.backslashEscapes ?? true;
  const n = sql.length;
  let i = 0;

  /** Index after a quoted run starting at `i` (the opening quote), doubling `q` escapes it; `bs`: backslash escapes. */
  const quoted = (q: string, bs: boolean): [string, number] => {
    let j = i + 1;
    let out = '';
    while (j < n) {
      const c = sql[j];
      if (bs && c === '\\' && j + 1 < n) {
        out += sql[j + 1];
        j += 2;
        continue;
      }
      if (c === q) {
        if (sql[j + 1] === q) {
          out += q;
          j += 2;
          continue;
        }
        return [out, j + 1];
      }
      out += c;
      j++;
    }
    return [out, n]; // unterminated: the rest is inside it (the server will reject the query)
  };

  while (i < n) {
    const c = sql[i];
    const next = sql[i + 1];
    if (/\s/.test(c)) {
      i++;
      continue;
    }
    // Comments.
    if (c === '-' && next === '-' && (dialect === 'postgres' || i + 2 >= n || /[\s\x00-\x1f]/.test(sql[i + 2]))) {
      const e = sql.indexOf('\n', i);
      i = e < 0 ? n : e + 1;
      continue;
    }
    if (dialect === 'mysql' && c === '#') {
      const e = sql.indexOf('\n', i);
      i = e < 0 ? n : e + 1;
      continue;
    }
    if (c === '/' && next === '*') {
      if (dialect === 'mysql') {
        const e = sql.indexOf('*/', i + 2);
        const end = e < 0 ? n : e + 2;
        const body = sql.slice(i, end);
        if (/^\/\*[mM]?!/.test(body)) executableComments.push(body);
        i = end;
        continue;
      }
      let depth = 1;
      let j = i + 2;
      while (j < n && depth > 0) {
        if (sql[j] === '/' && sql[j + 1] === '*') {
          depth++;
          j += 2;
        } else if (sql[j] === '*' && sql[j + 1] === '/') {
          depth--;
          j += 2;
        } else j++;
      }
      i = j;
      continue;
    }
    // Strings and quoted identifiers.
    if (dialect === 'postgres') {
      if ((c === 'e' || c === 'E') && next === "'") {
        i++;
        const [text, end] = quoted("'", true);
        tokens.push({ kind: 'string', text });
        i = end;
        continue;
      }
      if ((c === 'u' || c === 'U') && next === '&' && (sql[i + 2] === '"' || sql[i + 2] === "'")) {
        const q = sql[i + 2];
        i += 2;
        const [raw, end] = quoted(q, false);
        i = end;
        // Optional UESCAPE 'c' names another escape character.
        let esc = '\\';
        const m = /^\s*uescape\s*'(.)'/i.exec(sql.slice(i));
        if (m) {
          esc = m[1];
          i += m[0].length;
        }
        const text = decodeUnicodeEscapes(raw, esc);
        tokens.push(q === '"' ? { kind: 'word', text, quoted: true } : { kind: 'string', text });
        continue;
      }
      if (c === '$') {
        const m = /^\$([\p{L}_][\p{L}\p{N}_]*)?\$/u.exec(sql.slice(i));
        if (m) {
          const close = sql.indexOf(m[0], i + m[0].length);
          const end = close < 0 ? n : close + m[0].length;
          tokens.push({ kind: 'string', text: sql.slice(i + m[0].length, close < 0 ? n : close) });
          i = end;
          continue;
        }
      }
      if (c === "'") {
        const [text, end] = quoted("'", false);
        tokens.push({ kind: 'string', text });
        i = end;
        continue;
      }
      if (c === '"') {
        const [text, end] = quoted('"', false);
        tokens.push({ kind: 'word', text, quoted: true });
        i = end;
        continue;
      }
    } else {
      if (c === "'" || c === '"') {
        const [text, end] = quoted(c, backslash);
        tokens.push({ kind: 'string', text });
        i = end;
        continue;
      }
      if (c === '`') {
        const [text, end] = quoted('`', false);
        tokens.push({ kind: 'word', text, quoted: true });
        i = end;
        continue;
      }
    }
    if (/[0-9]/.test(c) || (c === '.' && /[0-9]/.test(next ?? ''))) {
      const m = /^(?:0[xX][0-9a-fA-F_]+|[0-9_]*\.?[0-9_]+(?:[eE][+-]?[0-9]+)?)/.exec(sql.slice(i));
      const len = m?.[0].length || 1;
      // MySQL allows identifiers that start with digits (1abc): keep them as words.
      const rest = sql.slice(i + len);
      if (dialect === 'mysql' && WORD_PART.test(rest[0] ?? '')) {
        let j = i;
        while (j < n && WORD_PART.test(sql[j])) j++;
        tokens.push({ kind: 'word', text: sql.slice(i, j).toLowerCase() });
        i = j;
        continue;
      }
      tokens.push({ kind: 'number', text: sql.slice(i, i + len) });
      i += len;
      continue;
    }
    if (WORD_START.test(c)) {
      let j = i + 1;
      while (j < n && WORD_PART.test(sql[j])) j++;
      tokens.push({ kind: 'word', text: sql.slice(i, j).toLowerCase() });
      i = j;
      continue;
    }
    tokens.push({ kind: 'punct', text: c });
    i++;
  }
  return { tokens, executableComments };
}

function decodeUnicodeEscapes(raw: string, esc: string): string {
  let out = '';
  for (let i = 0; i < raw.length; i++) {
    if (raw[i] !== esc) {
      out += raw[i];
      continue;
    }
    if (raw[i + 1] === esc) {
      out += esc;
      i++;
      continue;
    }
    const plus = raw[i + 1] === '+';
    const hex = plus ? raw.slice(i + 2, i + 8) : raw.slice(i + 1, i + 5);
    if (/^[0-9a-fA-F]+$/.test(hex) && hex.length === (plus ? 6 : 4)) {
      out += String.fromCodePoint(parseInt(hex, 16));
      i += plus ? 7 : 4;
    } else out += raw[i];
  }
  return out;
}
