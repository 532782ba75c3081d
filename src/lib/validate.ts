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

export function toFieldErrors(errors: ErrorObject[] | null | undefined, prefix = ''): FieldError[] {
  return (errors ?? []).map((e) => {
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
