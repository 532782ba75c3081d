import { GraphQLError, type ExecutionResult, type GraphQLFormattedError } from 'graphql';
import type { FastifyBaseLogger } from 'fastify';
import { AppError, isAppError } from '../errors.ts';
import { toAppError } from '../http/problem.ts';

// GraphQL errors carry the REST API's stable `code` in `extensions`, plus `status` (what REST
// would have answered), `errors` (field paths: JSON pointers into the `input` argument) and
// `hint` where the service gave one. HTTP status: a request that could not run at all
// (authentication, malformed or invalid document, limits) answers 4xx with a GraphQL body;
// once execution starts the answer is 200 and each failed field has its error, as the GraphQL
// over HTTP convention has it for application/json.

export interface ErrorExtensions {
  code: string;
  status: number;
  [k: string]: unknown;
}

export function appErrorExtensions(e: AppError): ErrorExtensions {
  return {
    ...(e.extra ?? {}),
    code: e.code,
    status: e.status,
    ...(e.errors?.length ? { errors: e.errors } : {}),
    ...(e.hint ? { hint: e.hint } : {}),
  };
}

/**
 * The services word some errors in REST terms (If-Match, If-None-Match, limit, cursor): say them
 * in the GraphQL arguments that carry them (expectedVersion, createOnly, first, after). Same code.
 */
export function inGraphqlTerms(e: AppError): AppError {
  const current = (e.extra as { currentVersion?: number } | undefined)?.currentVersion;
  if (e.code === 'version_mismatch') {
    return new AppError(e.status, e.code, e.title, {
      detail: `expectedVersion is not the current version${current === undefined ? '' : ` (${current})`}.`,
      hint: 'Query the object again (its version field) and retry with that expectedVersion.',
      extra: e.extra,
    });
  }
  if (e.code === 'already_exists') {
    return new AppError(e.status, e.code, e.title, { detail: 'createOnly is true, and the object exists.', hint: 'Leave createOnly out to replace it (with expectedVersion to make that conditional).', extra: e.extra });
  }
  const renames: Record<string, string> = { '/limit': '/first', '/cursor': '/after' };
  if (e.errors?.some((x) => x.path in renames)) {
    const errors = e.errors.map((x) => ({ ...x, path: renames[x.path] ?? x.path }));
    const detail = e.message.replace(/^limit\b/, 'first').replace(/^The cursor\b/, 'The after cursor');
    return new AppError(e.status, e.code, e.title, { detail, hint: e.hint, errors, extra: e.extra });
  }
  return e;
}

/** For places that send errors without the formatter (subscriptions over WebSocket). */
export function toGraphqlError(e: unknown): GraphQLError {
  if (e instanceof GraphQLError && typeof e.extensions?.code === 'string') return e;
  const app = e instanceof GraphQLError ? (e.originalError ?? e) : e;
  if (isAppError(app)) {
    const g = inGraphqlTerms(app);
    return new GraphQLError(g.message, { originalError: app, extensions: appErrorExtensions(g) });
  }
  if (e instanceof GraphQLError && !e.originalError) return new GraphQLError(e.message, { nodes: e.nodes, extensions: { code: 'graphql_validation_failed', status: 400 } });
  return new GraphQLError('An unexpected error occurred.', { extensions: { code: 'internal_error', status: 500 } });
}

export function limitError(code: string, message: string, extra: Record<string, unknown> = {}): GraphQLError {
  return new GraphQLError(message, { extensions: { code, status: 400, ...extra } });
}

interface Described {
  message: string;
  locations?: GraphQLFormattedError['locations'];
  path?: GraphQLFormattedError['path'];
  extensions: ErrorExtensions;
  /** Execution errors belong to a field; request errors do not. */
  inExecution: boolean;
}

const INTERNAL_MESSAGE = 'An unexpected error occurred. It has been logged with this request id.';

function describe(e: unknown, log: FastifyBaseLogger | undefined, out: Described[]): void {
  const gql = e instanceof GraphQLError ? e : undefined;
  const orig: unknown = gql ? (gql.originalError ?? undefined) : e;
  const where = {
    ...(gql?.locations ? { locations: gql.locations } : {}),
    ...(gql?.path ? { path: gql.path } : {}),
    inExecution: Boolean(gql?.path),
  };
  const code = (orig as { code?: unknown } | undefined)?.code;

  // mercurius wraps parse/validation/variable errors: one error holding the real ones.
  if (code === 'MER_ERR_GQL_VALIDATION' && Array.isArray((orig as { errors?: unknown }).errors)) {
    for (const inner of (orig as { errors: unknown[] }).errors) describeRequestError(inner, out);
    return;
  }
  if (code === 'MER_ERR_GQL_VALIDATION') {
    out.push({ message: (orig as Error).message, ...where, extensions: { code: 'graphql_validation_failed', status: 400 } });
    return;
  }
  if (code === 'MER_ERR_METHOD_NOT_ALLOWED') {
    out.push({ message: 'Mutations are sent with POST.', ...where, extensions: { code: 'method_not_allowed', status: 405 } });
    return;
  }
  if (gql && !orig) {
    if (typeof gql.extensions?.code === 'string') {
      out.push({ message: gql.message, ...where, extensions: { code: gql.extensions.code as string, status: 400, ...gql.extensions } });
    } else if (gql.path) {
      // graphql-js's own execution errors (e.g. null for a non-null field) are our bugs.
      log?.error({ err: gql }, 'graphql execution error');
      out.push({ message: gql.message, ...where, extensions: { code: 'internal_error', status: 500 } });
    } else {
      describeRequestError(gql, out);
    }
    return;
  }
  if (orig instanceof GraphQLError) {
    describe(orig, log, out);
    return;
  }
  const found = orig instanceof Error ? toAppError(orig) : undefined;
  const app = found && inGraphqlTerms(found);
  if (app) {
    if (app.status >= 500) log?.error({ err: orig }, 'graphql request failed');
    out.push({ message: app.message, ...where, extensions: appErrorExtensions(app) });
    return;
  }
  log?.error({ err: orig }, 'unhandled error in GraphQL');
  out.push({ message: INTERNAL_MESSAGE, ...where, extensions: { code: 'internal_error', status: 500 } });
}

function describeRequestError(e: unknown, out: Described[]): void {
  const gql = e instanceof GraphQLError ? e : undefined;
  const message = e instanceof Error ? e.message : String(e);
  const given = gql?.extensions?.code;
  // graphql-js' parser token limit (limits.ts, maxTokens) is reported as a syntax error.
  const tooLarge = /^Syntax Error: Document contains more th(?:at|an) \d+ tokens/.test(message);
  const code =
    typeof given === 'string' ? given : tooLarge ? 'query_too_large' : /^Syntax Error/.test(message) ? 'graphql_syntax_error' : 'graphql_validation_failed';
  out.push({
    message,
    ...(gql?.locations ? { locations: gql.locations } : {}),
    inExecution: false,
    extensions: { code, status: 400, ...(gql?.extensions ?? {}) } as ErrorExtensions,
  });
}

/** mercurius `errorFormatter`: the same shape for every error, and the status explained above. */
export function errorFormatter(
  execution: ExecutionResult,
  ctx: { reply?: { log: FastifyBaseLogger; request: { id: string } }; app?: { log: FastifyBaseLogger } },
): { statusCode: number; response: ExecutionResult } {
  const log = ctx?.reply?.log ?? ctx?.app?.log;
  const requestId = ctx?.reply?.request?.id;
  const described: Described[] = [];
  for (const e of execution.errors ?? []) describe(e, log, described);
  for (const d of described) {
    if (d.extensions.status >= 500 && requestId) d.extensions.requestId = requestId;
    else if (d.extensions.status < 500) log?.info({ code: d.extensions.code, status: d.extensions.status }, 'graphql error');
  }
  const requestLevel = execution.data == null && described.length > 0 && described.every((d) => !d.inExecution);
  const statusCode = requestLevel ? described[0].extensions.status : 200;
  const errors = described.map(({ inExecution: _omit, ...rest }) => rest);
  return { statusCode, response: { data: execution.data ?? null, errors: errors as never } };
}
