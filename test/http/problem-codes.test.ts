import t from 'tap';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { PROBLEM_CODES } from '../../src/http/problem-codes.ts';

// Every `code` the REST API can put in a problem document is in the published ProblemCode enum
// (issue 16, item 5). The codes are collected from the source: error classes' fixed codes, the
// code argument of every error constructed, `code:` literals of the HTTP layer and the tables that
// map driver errors to codes. A code added anywhere without being added to src/http/problem-codes.ts
// fails here. Worker-only code (engine: run errors; notify: delivery outcomes; graphql: its own
// request errors) never answers a REST request and is not scanned.

const SRC = new URL('../../src/', import.meta.url).pathname;
const SKIP = ['engine/', 'notify/', 'graphql/'];

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? files(p) : p.endsWith('.ts') ? [p] : [];
  });
}

/** The argument list of a call starting at `open` (the index of its "("), split at top-level commas. */
function args(text: string, open: number): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  const limit = Math.min(text.length, open + 5000);
  for (let i = open; i < limit; i++) {
    const c = text[i];
    if (c === "'" || c === '"' || c === '`') {
      let end = i + 1;
      while (end < limit && (text[end] !== c || text[end - 1] === '\\')) end++;
      cur += text.slice(i, end + 1);
      i = end;
      continue;
    }
    if (c === '(' || c === '[' || c === '{') {
      depth++;
      if (depth === 1) continue;
    } else if (c === ')' || c === ']' || c === '}') {
      depth--;
      if (depth === 0) {
        out.push(cur.trim());
        return out;
      }
    } else if (c === ',' && depth === 1) {
      out.push(cur.trim());
      cur = '';
      continue;
    }
    cur += c;
  }
  return out;
}

const LITERAL = /'([a-z][a-z0-9_]*)'/g;
/** Which argument of each error class's constructor is the code (BatchRejectedError is a row outcome the engine bisects, never an answer). */
const CODE_ARG: Record<string, number> = {
  AppError: 1,
  BadRequestError: 0,
  ConflictError: 0,
  UnprocessableError: 0,
  ConnectorError: 0,
  ValidationError: 2,
  simple: 1,
};

export function collectCodes(): { codes: Map<string, string>; dynamic: string[] } {
  const codes = new Map<string, string>();
  const dynamic: string[] = [];
  for (const file of files(SRC)) {
    const rel = relative(SRC, file);
    if (SKIP.some((s) => rel.startsWith(s))) continue;
    const text = readFileSync(file, 'utf8');
    const add = (code: string) => codes.set(code, codes.get(code) ?? rel);
    // Constructed errors: the code argument's literals (both branches of a ternary).
    for (const m of text.matchAll(/\b(?:new\s+(\w+)|(simple))\(/g)) {
      const cls = m[1] ?? m[2];
      const pos = CODE_ARG[cls];
      if (pos === undefined) continue;
      const a = args(text, m.index! + m[0].length - 1);
      const arg = a[pos];
      if (arg === undefined) continue;
      if (arg.startsWith('`')) dynamic.push(`${rel}: ${arg}`);
      for (const l of arg.matchAll(LITERAL)) add(l[1]);
    }
    // Fixed codes of the error classes, and defaults of code parameters.
    for (const m of text.matchAll(/super\(\s*\d+\s*,\s*'([a-z][a-z0-9_]*)'/g)) add(m[1]);
    for (const m of text.matchAll(/\bcode\s*=\s*'([a-z][a-z0-9_]*)'/g)) add(m[1]);
    // Problem documents written by hand in the HTTP layer.
    if (rel.startsWith('http/')) for (const m of text.matchAll(/\bcode:\s*'([a-z][a-z0-9_]*)'/g)) add(m[1]);
    // Tables mapping driver/socket errors to codes: `KEY: ['code', 'fatal' | 'retryable' | 'A message', …]`.
    for (const m of text.matchAll(/^\s*['"]?[\w-]+['"]?\s*:\s*\[\s*'([a-z][a-z0-9_]*)'\s*,\s*'(?:fatal|retryable|row|[A-Z])/gm)) add(m[1]);
  }
  return { codes, dynamic };
}

t.test('every problem code the API can answer is in the ProblemCode enum', async (t) => {
  const { codes, dynamic } = collectCodes();
  t.ok(codes.size > 40, `found ${codes.size} codes`);
  for (const known of ['validation_failed', 'not_found', 'version_mismatch', 'slug_taken', 'internal_error', 'malformed_json', 'auth_failed', 'read_only_field', 'slug_mismatch']) {
    t.ok(codes.has(known), `the scan finds ${known}`);
  }
  const missing = [...codes].filter(([c]) => !PROBLEM_CODES.includes(c as never)).map(([c, f]) => `${c} (${f})`);
  t.same(missing, [], 'no thrown code is missing from src/http/problem-codes.ts');
  t.same(dynamic, [], 'no code is built at run time (it could not be in the enum)');
  t.same([...PROBLEM_CODES].sort(), [...PROBLEM_CODES], 'the enum is sorted');
  t.equal(new Set(PROBLEM_CODES).size, PROBLEM_CODES.length, 'without duplicates');
  const unused = PROBLEM_CODES.filter((c) => !codes.has(c));
  t.same(unused, [], 'and holds no code that nothing throws');
});
