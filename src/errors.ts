import type { WireExchange } from './connectors/types.ts';

// One error hierarchy for the whole process. HTTP maps it to problem+json, GraphQL to
// `extensions.code`, the engine to a run's `error`. `code` values are a public contract:
// never rename one, only add.

export interface FieldError {
  path: string;
  message: string;
}

export interface AppErrorOptions {
  detail?: string;
  hint?: string;
  errors?: FieldError[];
  cause?: unknown;
  /** Extra machine-readable members added to the problem document. */
  extra?: Record<string, unknown>;
}

export class AppError extends Error {
  readonly status: number;
  readonly code: string;
  readonly title: string;
  readonly hint?: string;
  readonly errors?: FieldError[];
  readonly extra?: Record<string, unknown>;

  constructor(status: number, code: string, title: string, opts: AppErrorOptions = {}) {
    super(opts.detail ?? title, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = new.target.name;
    this.status = status;
    this.code = code;
    this.title = title;
    this.hint = opts.hint;
    this.errors = opts.errors;
    this.extra = opts.extra;
  }

  get detail(): string {
    return this.message;
  }
}

export class ValidationError extends AppError {
  constructor(detail: string, errors: FieldError[] = [], code = 'validation_failed') {
    super(400, code, 'Request validation failed', { detail, errors });
  }
}

export class BadRequestError extends AppError {
  constructor(code: string, detail: string, opts: Omit<AppErrorOptions, 'detail'> = {}) {
    super(400, code, 'Bad request', { ...opts, detail });
  }
}

export class UnauthorizedError extends AppError {
  constructor(detail = 'A valid API key is required: send "Authorization: Bearer bh_…".') {
    super(401, 'unauthorized', 'Unauthorized', { detail });
  }
}

export class ForbiddenError extends AppError {
  constructor(detail: string) {
    super(403, 'forbidden', 'Forbidden', { detail });
  }
}

export class NotFoundError extends AppError {
  constructor(resource: string, ref: string) {
    super(404, 'not_found', 'Not found', { detail: `${resource} "${ref}" was not found.`, extra: { resource } });
  }
}

export class ConflictError extends AppError {
  constructor(code: string, detail: string, opts: Omit<AppErrorOptions, 'detail'> = {}) {
    super(409, code, 'Conflict', { ...opts, detail });
  }
}

export class PreconditionFailedError extends AppError {
  constructor(expected: string, actual: number) {
    super(412, 'version_mismatch', 'Precondition failed', {
      detail: `If-Match was ${expected} but the current version is ${actual}.`,
      hint: 'Fetch the resource again, re-apply your change and retry with the new ETag.',
      extra: { currentVersion: actual },
    });
  }
}

export class UnprocessableError extends AppError {
  constructor(code: string, detail: string, opts: Omit<AppErrorOptions, 'detail'> = {}) {
    super(422, code, 'Unprocessable request', { ...opts, detail });
  }
}

/**
 * The control database cannot be reached (restart, failover, network): 503, and the request can
 * be retried as is once it is back (`Retry-After` says when to try).
 */
export class DatabaseUnavailableError extends AppError {
  static readonly retryAfterSeconds = 5;
  constructor(opts: { cause?: unknown } = {}) {
    super(503, 'database_unavailable', 'Service unavailable', {
      detail: 'The control database cannot be reached right now; nothing was changed by this request.',
      hint: `Retry in a few seconds (Retry-After: ${DatabaseUnavailableError.retryAfterSeconds}).`,
      cause: opts.cause,
    });
  }
}

/** How the engine treats a failure: retry it inside the run, fail the run, or fail one row. */
export type ErrorClass = 'retryable' | 'fatal' | 'row';

/**
 * A failure talking to a source or destination. `classification` drives the engine;
 * `status` lets the same error answer an HTTP request (e.g. a connection test or a preview).
 */
export class ConnectorError extends AppError {
  readonly classification: ErrorClass;
  /** Milliseconds the remote asked us to wait (Retry-After), when it said so. */
  readonly retryAfterMs?: number;
  /** The requests (auth redacted) that led to this failure, for the row debugger. */
  exchanges?: WireExchange[];
  /**
   * With classification `fatal`: stop the run now (retrying inside it would only hammer the
   * remote), but the failure is temporary, so the run's error is `retryable: true` and
   * `retryAfterMs` says when trying again makes sense (e.g. a daily API quota until its reset).
   */
  readonly retryLater?: boolean;

  constructor(
    code: string,
    message: string,
    opts: { classification: ErrorClass; hint?: string; retryAfterMs?: number; status?: number; cause?: unknown; retryLater?: boolean },
  ) {
    super(opts.status ?? 422, code, 'Connector error', { detail: message, hint: opts.hint, cause: opts.cause });
    this.classification = opts.classification;
    this.retryAfterMs = opts.retryAfterMs;
    if (opts.retryLater) this.retryLater = true;
  }

  get retryable(): boolean {
    return this.classification === 'retryable';
  }
}

/**
 * A destination refused a whole batch (a 4xx for the request, not per row). The engine bisects
 * the batch to find the rows at fault; a batch of one row becomes that row's rejection.
 */
export class BatchRejectedError extends ConnectorError {
  constructor(code: string, message: string, opts: { hint?: string; cause?: unknown } = {}) {
    super(code, message, { classification: 'row', ...opts });
  }
}

export function isAppError(e: unknown): e is AppError {
  return e instanceof AppError;
}
