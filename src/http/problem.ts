import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { errorSummary, isDatabaseConnectionError } from '../db/client.ts';
import { AppError, DatabaseUnavailableError, type FieldError } from '../errors.ts';
import { toFieldErrors } from '../lib/validate.ts';

// Every error answer is RFC 9457 problem+json with a stable `code`. Unknown errors are 500s
// that say nothing internal; the full error goes to the log with the request id.

export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: string;
  errors?: FieldError[];
  hint?: string;
  requestId?: string;
  [k: string]: unknown;
}

const TYPE_BASE = 'https://backhaul.dev/problems/';

export function problemOf(err: AppError, requestId?: string): Problem {
  return {
    type: `${TYPE_BASE}${err.code}`,
    title: err.title,
    status: err.status,
    detail: err.message,
    code: err.code,
    ...(err.errors?.length ? { errors: err.errors } : {}),
    ...(err.hint ? { hint: err.hint } : {}),
    ...(err.extra ?? {}),
    ...(requestId ? { requestId } : {}),
  };
}

function simple(status: number, code: string, title: string, detail: string, errors?: FieldError[]): AppError {
  return new AppError(status, code, title, { detail, errors });
}

/** Maps fastify's own errors (parsing, validation, limits) onto our codes. */
export function toAppError(err: FastifyError | Error): AppError | undefined {
  if (err instanceof AppError) return err;
  // The control database went away (restart, failover, network): 503, retry later.
  if (isDatabaseConnectionError(err)) return new DatabaseUnavailableError({ cause: err });
  const fe = err as FastifyError & { validation?: unknown[]; validationContext?: string };
  if (fe.validation) {
    const part = fe.validationContext ?? 'body';
    const prefix = part === 'body' ? '' : `/${part}`;
    const errors = toFieldErrors(fe.validation as never, prefix);
    return simple(400, 'validation_failed', 'Request validation failed', `The request ${part} is invalid: ${errors.map((e) => `${e.path} ${e.message}`).join('; ')}`, errors);
  }
  switch (fe.code) {
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return simple(400, 'malformed_json', 'Malformed JSON', 'The request body is not valid JSON.');
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return simple(400, 'malformed_json', 'Malformed JSON', 'The request declares a JSON body but sent none.');
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return simple(413, 'body_too_large', 'Payload too large', fe.message);
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return simple(415, 'unsupported_media_type', 'Unsupported media type', 'Send request bodies as application/json.');
    case 'FST_ERR_CTP_INVALID_TYPE':
      return simple(415, 'unsupported_media_type', 'Unsupported media type', 'The Content-Type header is not valid.');
  }
  if (err instanceof SyntaxError && /JSON/.test(err.message)) {
    return simple(400, 'malformed_json', 'Malformed JSON', 'The request body is not valid JSON.');
  }
  if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
    return simple(fe.statusCode, 'bad_request', 'Bad request', fe.message);
  }
  return undefined;
}

export function sendProblem(reply: FastifyReply, problem: Problem): FastifyReply {
  return reply.code(problem.status).type('application/problem+json').send(problem);
}

export function errorHandler(err: FastifyError, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  const app = toAppError(err);
  if (app) {
    if (app instanceof DatabaseUnavailableError) {
      // Expected while the database is away (one line per request, not the failed query).
      request.log.warn({ code: app.code, cause: errorSummary(err) }, 'request failed: database unavailable');
      reply.header('retry-after', String(DatabaseUnavailableError.retryAfterSeconds));
      return sendProblem(reply, problemOf(app, request.id));
    }
    if (app.status >= 500) request.log.error({ err }, 'request failed');
    else request.log.info({ code: app.code, status: app.status }, 'request rejected');
    return sendProblem(reply, problemOf(app, request.id));
  }
  request.log.error({ err }, 'unhandled error');
  return sendProblem(reply, {
    type: `${TYPE_BASE}internal_error`,
    title: 'Internal server error',
    status: 500,
    detail: 'An unexpected error occurred. It has been logged with this request id.',
    code: 'internal_error',
    requestId: request.id,
  });
}
