import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import addFormatsModule from 'ajv-formats';
import { ValidationError, type FieldError } from '../errors.ts';

// One strict validator for user input, shared by HTTP routes, GraphQL and the services:
// unknown fields are errors (never silently dropped), no type coercion, every error reported.
// Defaults are applied by the services, never by the validator, so PATCH cannot reset fields.

const addFormats = addFormatsModule as unknown as (ajv: Ajv) => Ajv;

function makeAjv(opts: { coerceTypes: boolean | 'array'; useDefaults: boolean }): Ajv {
  const ajv = new Ajv({
    allErrors: true,
    strict: false,
    removeAdditional: false,
    // Errors carry the failing schema, so a union's failure can be reduced to its relevant branch.
    verbose: true,
    coerceTypes: opts.coerceTypes,
    useDefaults: opts.useDefaults,
  });
  addFormats(ajv);
  return guardStrings(ajv);
}

/**
 * PostgreSQL cannot store NUL characters (text, jsonb) nor unpaired UTF-16 surrogates (jsonb),
 * so a string holding one would fail deep in a query as a 500. Every validator compiled from
 * these instances (routes' body/params/query/headers, and assertValid) rejects them first, as a
 * 400 naming the field.
 */
const BAD_STRING = /\u0000|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/**
 * Deepest nesting of arrays and objects accepted in a request body (REST bodies, GraphQL
 * variables): far above any real configuration, far below what would overflow the stack of a
 * recursive walk (ours, ajv's, a JSON column's). Deeper bodies answer 400 `body_too_deep`.
 */
export const MAX_JSON_DEPTH = 64;

/** Whether `value` nests arrays/objects more than `max` levels deep (iterative: any depth is safe). */
export function jsonTooDeep(value: unknown, max = MAX_JSON_DEPTH): boolean {
  const stack: [unknown, number][] = [[value, 0]];
  while (stack.length) {
    const [v, depth] = stack.pop()!;
    if (v === null || typeof v !== 'object') continue;
    if (depth >= max) return true;
    for (const x of Array.isArray(v) ? v : Object.values(v)) if (x !== null && typeof x === 'object') stack.push([x, depth + 1]);
  }
  return false;
}

/** The 400 a body nested too deeply answers (REST and GraphQL). */
export function bodyTooDeep(): ValidationError {
  return new ValidationError(`The request body nests arrays or objects more than ${MAX_JSON_DEPTH} levels deep.`, [], 'body_too_deep');
}

// Iterative, so that no value (however deep) overflows the stack here.
function badStrings(value: unknown): ErrorObject[] {
  const out: ErrorObject[] = [];
  const bad = (instancePath: string) =>
    out.push({ keyword: 'string', instancePath, schemaPath: '#', params: {}, message: 'must not contain NUL characters or unpaired surrogates' });
  const stack: [unknown, string][] = [[value, '']];
  while (stack.length && out.length < 20) {
    const [v, path] = stack.pop()!;
    if (typeof v === 'string') {
      if (BAD_STRING.test(v)) bad(path);
    } else if (Array.isArray(v)) {
      for (let i = v.length - 1; i >= 0; i--) stack.push([v[i], `${path}/${i}`]);
    } else if (v !== null && typeof v === 'object') {
      const entries = Object.entries(v);
      for (let i = entries.length - 1; i >= 0; i--) {
        const [k, x] = entries[i];
        const p = `${path}/${k.replace(/~/g, '~0').replace(/\//g, '~1')}`;
        if (BAD_STRING.test(k)) bad(p);
        stack.push([x, p]);
      }
    }
  }
  return out;
}

function guardStrings(ajv: Ajv): Ajv {
  const compile = ajv.compile.bind(ajv);
  ajv.compile = ((schema: object, meta?: boolean) => {
    const fn = compile(schema, meta);
    const guarded = ((data: unknown, ...rest: unknown[]) => {
      const bad = badStrings(data);
      if (bad.length) {
        guarded.errors = bad;
        return false;
      }
      const ok = (fn as (...a: unknown[]) => boolean)(data, ...rest);
      guarded.errors = fn.errors;
      return ok;
    }) as ValidateFunction;
    // fastify passes the parent data (so defaults can be applied) when it sees schemaEnv.
    Object.assign(guarded, { schema: fn.schema, schemaEnv: fn.schemaEnv });
    return guarded;
  }) as Ajv['compile'];
  return ajv;
}

/** Bodies: strict. */
export const bodyAjv = makeAjv({ coerceTypes: false, useDefaults: false });
/** Query strings and path params arrive as strings: coerce to the declared types. */
export const paramsAjv = makeAjv({ coerceTypes: 'array', useDefaults: true });
/** Connector configs: strict, with the connector's documented defaults filled in. */
export const configAjv = makeAjv({ coerceTypes: false, useDefaults: true });

const isUnion = (e: ErrorObject) => e.keyword === 'anyOf' || e.keyword === 'oneOf';
const within = (inner: string, outer: string) => inner === outer || inner.startsWith(`${outer}/`);
const depth = (p: string) => (p === '' ? 0 : p.split('/').length);

/** One error standing for a whole union's failure, at the union's own path. */
function unionError(u: ErrorObject, message: string, params: Record<string, unknown> = {}): ErrorObject {
  return { keyword: 'union', instancePath: u.instancePath, schemaPath: u.schemaPath, params, message };
}

/**
 * The errors of the branch a value was meant for, in place of every branch's errors (ajv reports
 * all of them: a mapping source with a typo gave five errors, four of them about other shapes).
 * Outermost unions first; per union:
 * - every branch failed on its type, or on the same discriminating const: one error listing the
 *   types or values allowed;
 * - else the branches that did not fail on a discriminating const (or on the value's type);
 *   of those, one whose errors all lie below the union's value (its shape matched) wins;
 * - a value whose shape matches no branch of an object union ({}, or keys of two branches): one
 *   error naming each branch's required key ("must have exactly one of: column, static…");
 * - else the branch with the fewest errors.
 */
export function relevantErrors(errors: ErrorObject[]): ErrorObject[] {
  let list = [...errors];
  const done = new Set<ErrorObject>();
  for (;;) {
    const unions = list.filter((e) => isUnion(e) && !done.has(e));
    const u = unions.sort((a, b) => depth(a.instancePath) - depth(b.instancePath) || a.schemaPath.length - b.schemaPath.length)[0];
    if (!u) break;
    done.add(u);
    const prefix = `${u.schemaPath}/`;
    const inBranch = (e: ErrorObject) => e !== u && e.schemaPath.startsWith(prefix) && within(e.instancePath, u.instancePath);
    const branches = new Map<string, ErrorObject[]>();
    for (const e of list.filter(inBranch)) {
      const b = e.schemaPath.slice(prefix.length).split('/')[0];
      branches.set(b, [...(branches.get(b) ?? []), e]);
    }
    const chosen = chooseBranch(u, [...branches.values()]) ?? [u];
    for (const c of chosen) if (c !== u && isUnion(c)) done.delete(c);
    // The chosen errors take the union's place; the other branches' errors go.
    list = list.flatMap((e) => (e === u ? chosen : inBranch(e) ? [] : [e]));
  }
  return list;
}

function chooseBranch(u: ErrorObject, branches: ErrorObject[][]): ErrorObject[] | undefined {
  if (!branches.length) return undefined;
  const here = (e: ErrorObject) => e.instancePath === u.instancePath;
  // Wrong type for every branch: "must be number or null".
  const typeOnly = branches.every((b) => b.length === 1 && b[0].keyword === 'type' && here(b[0]));
  if (typeOnly) {
    const types = [...new Set(branches.map((b) => String((b[0].params as { type: unknown }).type)))];
    return [unionError(u, `must be ${types.join(' or ')}`, { types })];
  }
  // Every branch refused the same discriminating field: "must be one of: …" at that field.
  const constOf = (b: ErrorObject[]) => b.find((e) => e.keyword === 'const');
  if (branches.every((b) => constOf(b))) {
    const paths = new Set(branches.map((b) => constOf(b)!.instancePath));
    if (paths.size === 1) {
      const allowed = branches.map((b) => (constOf(b)!.params as { allowedValue: unknown }).allowedValue);
      const at = constOf(branches[0])!;
      return [{ ...unionError(u, `must be one of: ${allowed.map((v) => JSON.stringify(v)).join(', ')}`, { allowedValues: allowed }), instancePath: at.instancePath }];
    }
  }
  const wrongKind = (b: ErrorObject[]) => b.some((e) => e.keyword === 'const' || (e.keyword === 'type' && here(e)));
  const candidates = branches.filter((b) => !wrongKind(b));
  const pool = candidates.length ? candidates : branches;
  const shapeMatched = pool.find((b) => b.every((e) => !here(e)));
  if (shapeMatched) return shapeMatched;
  // No branch's shape fits an object: name the key each branch requires, when each has one.
  const variants = Array.isArray(u.schema) ? (u.schema as { required?: string[]; type?: string }[]) : [];
  const keys = variants.map((v) => (v.type === 'object' && v.required?.length === 1 ? v.required[0] : undefined));
  if (variants.length === branches.length && keys.every((k) => k !== undefined)) {
    return [unionError(u, `must have exactly one of: ${keys.join(', ')}`, { oneOf: keys })];
  }
  return pool.reduce((best, b) => (b.length < best.length ? b : best));
}

export function toFieldErrors(errors: ErrorObject[] | null | undefined, prefix = ''): FieldError[] {
  return relevantErrors(errors ?? []).map((e) => {
    let path = prefix + e.instancePath;
    let message = e.message ?? 'is invalid';
    if (e.keyword === 'additionalProperties') {
      path = `${path}/${(e.params as { additionalProperty: string }).additionalProperty}`;
      message = 'is not a known field';
    } else if (e.keyword === 'required') {
      path = `${path}/${(e.params as { missingProperty: string }).missingProperty}`;
      message = 'is required';
    } else if (e.keyword === 'enum') {
      message = `must be one of: ${(e.params as { allowedValues: unknown[] }).allowedValues.map((v) => JSON.stringify(v)).join(', ')}`;
    }
    return { path: path || '/', message };
  });
}

const cache = new WeakMap<object, ValidateFunction>();

function compiled(ajv: Ajv, schema: object): ValidateFunction {
  let fn = cache.get(schema);
  if (!fn) {
    fn = ajv.compile(schema);
    cache.set(schema, fn);
  }
  return fn;
}

/** Validates `value` against `schema`; throws ValidationError listing every problem with its JSON pointer. */
export function assertValid<T>(schema: object, value: unknown, opts: { prefix?: string; what?: string } = {}): T {
  const fn = compiled(bodyAjv, schema);
  if (!fn(value)) {
    const errors = toFieldErrors(fn.errors, opts.prefix);
    throw new ValidationError(`${opts.what ?? 'The request body'} is invalid: ${errors.map((e) => `${e.path} ${e.message}`).join('; ')}`, errors);
  }
  return value as T;
}

const configCache = new WeakMap<object, ValidateFunction>();

/** Validates a connector config in place (fills defaults) and returns it. */
export function validateConnectorConfig(schema: object, value: unknown, prefix = '/config'): Record<string, unknown> {
  let fn = configCache.get(schema);
  if (!fn) {
    fn = configAjv.compile(schema);
    configCache.set(schema, fn);
  }
  const copy = structuredClone(value);
  if (!fn(copy)) {
    const errors = toFieldErrors(fn.errors, prefix);
    throw new ValidationError(`The connection config is invalid: ${errors.map((e) => `${e.path} ${e.message}`).join('; ')}`, errors);
  }
  return copy as Record<string, unknown>;
}
