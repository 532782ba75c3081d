import { ConnectorError } from '../errors.ts';

// A deliberately small template language for mappings and HTTP paths:
//   {{ column }}   {{ column | upper }}   {{ first | default:"n/a" | trim }}   {{ "literal" }}
// Parsed once into a list of parts; rendering is plain string concatenation: there is no
// expression evaluation and nothing reaches eval/Function.

export type TemplateRow = Record<string, unknown>;

export interface CompiledTemplate {
  /** Columns the template reads, in order of first use. */
  readonly columns: string[];
  render(row: TemplateRow): string;
}

export interface TemplateOptions {
  /** Known columns: an unknown one is a compile-time error. Without it, checked when rendering. */
  columns?: Iterable<string>;
  /** Maximum rendered length (default 65,536 characters). */
  maxLength?: number;
  /** Applied to each substituted value (e.g. encodeURIComponent for URL paths). */
  encode?: (value: string) => string;
  /** A substitution that renders empty is an error (e.g. an id in a URL path). */
  requireValues?: boolean;
}

type Filter = (v: unknown) => unknown;
type Expr = { column?: string; literal?: string; filters: Filter[]; source: string };

const FILTERS: Record<string, (arg?: string) => Filter> = {
  upper: () => (v) => stringify(v).toUpperCase(),
  lower: () => (v) => stringify(v).toLowerCase(),
  trim: () => (v) => stringify(v).trim(),
  default: (arg) => (v) => (v === null || v === undefined || v === '' ? arg : v),
};
const NEEDS_ARG = new Set(['default']);

export function stringify(v: unknown): string {
  if (v === null || v === undefined) return '';
  if (typeof v === 'string') return v;
  if (v instanceof Date) return v.toISOString();
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

function invalid(src: string, pos: number, why: string): ConnectorError {
  return new ConnectorError('invalid_template', `Template error at character ${pos + 1}: ${why} (in ${JSON.stringify(src.length > 200 ? `${src.slice(0, 200)}…` : src)}).`, {
    classification: 'fatal',
    status: 400,
    hint: 'Templates look like "{{ first_name }} {{ last_name | upper }}"; filters: upper, lower, trim, default:"value".',
  });
}

/** Parses the inside of one `{{ … }}`. */
function parseExpr(src: string, body: string, offset: number): Expr {
  let i = 0;
  const ws = () => {
    while (i < body.length && /\s/.test(body[i])) i++;
  };
  const str = (): string | undefined => {
    const q = body[i];
    if (q !== '"' && q !== "'") return undefined;
    let out = '';
    i++;
    while (i < body.length && body[i] !== q) {
      if (body[i] === '\\' && i + 1 < body.length) i++;
      out += body[i++];
    }
    if (body[i] !== q) throw invalid(src, offset + i, 'unterminated string');
    i++;
    return out;
  };
  const ident = (): string | undefined => {
    const m = /^[A-Za-z_][\w$]*/.exec(body.slice(i));
    if (!m) return undefined;
    i += m[0].length;
    return m[0];
  };
  ws();
  const literal = str();
  const column = literal === undefined ? ident() : undefined;
  if (literal === undefined && column === undefined) throw invalid(src, offset + i, 'expected a column name or a "string"');
  const filters: Filter[] = [];
  ws();
  while (i < body.length) {
    if (body[i] !== '|') throw invalid(src, offset + i, `unexpected "${body[i]}"`);
    i++;
    ws();
    const name = ident();
    if (!name || !FILTERS[name]) throw invalid(src, offset + i, `unknown filter "${name ?? body.slice(i, i + 10)}"`);
    ws();
    let arg: string | undefined;
    if (body[i] === ':') {
      i++;
      ws();
      arg = str();
      if (arg === undefined) throw invalid(src, offset + i, `filter "${name}" takes a "string" argument`);
      ws();
    } else if (NEEDS_ARG.has(name)) throw invalid(src, offset + i, `filter "${name}" needs an argument, e.g. ${name}:"value"`);
    filters.push(FILTERS[name](arg));
  }
  return { column, literal, filters, source: body.trim() };
}

export function compileTemplate(src: string, opts: TemplateOptions = {}): CompiledTemplate {
  const maxLength = opts.maxLength ?? 65_536;
  const known = opts.columns ? new Set(opts.columns) : undefined;
  const parts: (string | Expr)[] = [];
  const columns: string[] = [];
  let i = 0;
  while (i < src.length) {
    const open = src.indexOf('{{', i);
    if (open < 0) {
      parts.push(src.slice(i));
      break;
    }
    if (open > i) parts.push(src.slice(i, open));
    const close = src.indexOf('}}', open + 2);
    if (close < 0) throw invalid(src, open, 'unclosed "{{"');
    const expr = parseExpr(src, src.slice(open + 2, close), open + 2);
    if (expr.column !== undefined) {
      if (known && !known.has(expr.column)) throw invalid(src, open, `unknown column "${expr.column}"`);
      if (!columns.includes(expr.column)) columns.push(expr.column);
    }
    parts.push(expr);
    i = close + 2;
  }
  const encode = opts.encode;
  return {
    columns,
    render(row: TemplateRow): string {
      let out = '';
      for (const p of parts) {
        if (typeof p === 'string') {
          out += p;
          continue;
        }
        let v: unknown;
        if (p.column !== undefined) {
          // Own properties only: `__proto__`/`constructor` never reach the prototype chain.
          const has = Object.hasOwn(row, p.column);
          if (!known && !has) {
            throw new ConnectorError('template_error', `Template refers to column "${p.column}", which the row does not have.`, {
              classification: 'row',
              hint: 'Use a column of the model\'s result.',
            });
          }
          v = has ? row[p.column] : undefined;
        } else v = p.literal;
        for (const f of p.filters) v = f(v);
        const s = stringify(v);
        if (opts.requireValues && s === '') {
          throw new ConnectorError('template_error', `"{{ ${p.source} }}" has no value for this row.`, { classification: 'row' });
        }
        out += encode ? encode(s) : s;
        if (out.length > maxLength) {
          throw new ConnectorError('template_error', `The template's output exceeds ${maxLength} characters.`, { classification: 'row' });
        }
      }
      return out;
    },
  };
}
