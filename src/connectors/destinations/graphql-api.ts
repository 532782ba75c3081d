import { ConnectorError } from '../../errors.ts';
import { httpRequest, parseRetryAfter, type HttpResponse } from '../../lib/http-client.ts';
import type {
  ColumnType, ConnectorContext, DestinationCapabilities, DestinationConnector, DestinationField, DestinationObject,
  ResolvedSecrets, RowResult, WireExchange, WriteOperation, WriteRequest, WriteResult,
} from '../types.ts';
import { HttpAuth, type HttpAuthConfig } from './http-auth.ts';
import { MAX_ROW_MESSAGE, errorMessage, exchange, parseJson } from './http-response.ts';
import { secretRedactor, type Redactor } from '../../lib/redact.ts';
import {
  batchAlias, batchDocument, batchVar, compileMutation, compileVariables, rootResponseKey, type CompiledMutation, type VariablesBuilder,
} from './graphql-api-document.ts';

// GraphQL API destination: a mutation per operation, variables built from the mapped payload,
// one request per row (row mode) or several rows per request as aliased copies of the mutation
// (batch mode). Outcomes follow the GraphQL spec's response format ("Response", "Errors": field
// errors carry a `path` whose first element is the root field's response key, here the row's
// alias; a request error has no `data`) and the GraphQL-over-HTTP spec (POST JSON, Accept
// application/graphql-response+json, non-2xx for request errors under that media type).

export interface GraphqlOperationConfig {
  /** A GraphQL document with exactly one mutation operation. */
  mutation: string;
  /** Variables built per row (see compileVariables): e.g. `{ "input": "$payload" }`. */
  variables?: Record<string, unknown>;
  mode?: 'row' | 'batch';
  /** Batch mode: rows per request (default 50). */
  batchSize?: number;
  /** Dot path, inside the mutation field's result, of the record's id (e.g. `id`, `contact.id`). */
  idPath?: string;
  /** Dot path, inside the mutation field's result, of a list of user errors (`userErrors`): non-empty → row rejected. */
  userErrorsPath?: string;
}

export interface GraphqlObjectConfig {
  name: string;
  label?: string;
  fields: { name: string; type?: ColumnType; required?: boolean; identifier?: boolean; equality?: 'exact' | 'case_insensitive' }[];
  operations: Partial<Record<WriteOperation, GraphqlOperationConfig>>;
}

export interface GraphqlDestinationConfig {
  url: string;
  auth?: HttpAuthConfig;
  headers?: Record<string, string>;
  timeoutMs?: number;
  maxResponseBytes?: number;
  maxBatchSize?: number;
  maxRequestsPerSecond?: number;
  /** Row mode: requests in flight at once within one write. */
  rowConcurrency?: number;
  /** `extensions.code` values of field errors that a later attempt may not hit (default: throttling and unavailability codes). */
  retryableErrorCodes?: string[];
  objects: GraphqlObjectConfig[];
}

interface GqlError {
  message?: string;
  path?: (string | number)[];
  extensions?: { code?: string; [k: string]: unknown };
}

interface Compiled {
  op: GraphqlOperationConfig;
  mutation: CompiledMutation;
  vars: VariablesBuilder;
  /** Row mode: response key of the root field. */
  key?: string;
}

const DEFAULT_RETRYABLE = ['THROTTLED', 'RATE_LIMITED', 'TOO_MANY_REQUESTS', 'SERVICE_UNAVAILABLE', 'TIMEOUT', 'TIMED_OUT'];
const AUTH_CODES = new Set(['UNAUTHENTICATED', 'UNAUTHORIZED']);
const ROW_VAR = /\$r(\d+)_/g;

function at(v: unknown, path: string | undefined): unknown {
  if (!path) return undefined;
  let cur = v;
  for (const p of path.split('.')) {
    if (!cur || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string, unknown>)[p];
  }
  return cur;
}

const messages = (errs: GqlError[]) => [...new Set(errs.map((e) => e.message ?? JSON.stringify(e)))].join('; ').slice(0, MAX_ROW_MESSAGE);

/**
 * Writes rows through a GraphQL API's mutations. HTTP-level failures are classified as for REST
 * (429/408/5xx retryable with Retry-After, 401/403 fatal after one OAuth refresh); a request error
 * (a document the server refuses: no `data`) is fatal with the server's message, except variable
 * coercion errors, which name their row's variables and reject that row only.
 */
export class GraphqlApiDestination implements DestinationConnector {
  readonly #config: GraphqlDestinationConfig;
  readonly #ctx: ConnectorContext;
  readonly #auth: HttpAuth;
  readonly #redact: Redactor;
  readonly #objects: Map<string, GraphqlObjectConfig>;
  readonly #compiled = new Map<string, Compiled>();
  readonly #retryable: Set<string>;

  constructor(config: GraphqlDestinationConfig, secrets: ResolvedSecrets, ctx: ConnectorContext) {
    this.#config = config;
    this.#ctx = ctx;
    this.#auth = new HttpAuth(config.auth, secrets, this.#transport());
    this.#redact = secretRedactor(() => this.#auth.secretValues, this.#auth.secretHeaderNames);
    this.#objects = new Map(config.objects.map((o) => [o.name, o]));
    this.#retryable = new Set(config.retryableErrorCodes ?? DEFAULT_RETRYABLE);
    // Check every document now: a bad one is a config error, not a failure of the first run.
    for (const o of config.objects) for (const [name, op] of Object.entries(o.operations)) if (op) this.#compile(o.name, name as WriteOperation, op);
  }

  #transport() {
    return { timeoutMs: this.#config.timeoutMs ?? 30_000, maxResponseBytes: this.#config.maxResponseBytes ?? 5_242_880, denyPrivateNetworks: this.#ctx.denyPrivateNetworks };
  }

  #compile(object: string, operation: WriteOperation, op: GraphqlOperationConfig): Compiled {
    const k = `${object}\u0000${operation}`;
    let c = this.#compiled.get(k);
    if (!c) {
      const what = `objects["${object}"].operations.${operation}`;
      const mutation = compileMutation(op.mutation, what, (op.mode ?? 'row') === 'batch');
      const vars = compileVariables(op.variables ?? { input: '$payload' }, what);
      c = { op, mutation, vars, key: rootResponseKey(mutation) };
      this.#compiled.set(k, c);
    }
    return c;
  }

  /** A `{ __typename }` query: any GraphQL answer proves the endpoint and the credentials. */
  async test(): Promise<void> {
    const res = await this.#send({ query: 'query BackhaulPing { __typename }' }, [], []);
    const err = this.#httpError(res);
    if (err) throw err;
    const body = parseJson(res.body) as { data?: unknown; errors?: GqlError[] } | undefined;
    if (!body || typeof body !== 'object' || (!('data' in body) && !Array.isArray(body.errors))) {
      throw new ConnectorError('not_graphql', `${this.#config.url} did not answer like a GraphQL endpoint (status ${res.status}).`, { classification: 'fatal', hint: 'Point url at the GraphQL endpoint (often /graphql).' });
    }
  }

  async objects(): Promise<DestinationObject[]> {
    return this.#config.objects.map((o) => ({ name: o.name, ...(o.label ? { label: o.label } : {}) }));
  }

  async fields(object: string): Promise<DestinationField[]> {
    return this.#object(object).fields.map((f) => ({
      name: f.name,
      type: f.type ?? 'string',
      required: f.required ?? false,
      identifier: f.identifier ?? false,
      ...(f.equality ? { equality: f.equality } : {}),
    }));
  }

  capabilities(): DestinationCapabilities {
    const ops = new Set<WriteOperation>();
    for (const o of this.#config.objects) for (const k of Object.keys(o.operations)) ops.add(k as WriteOperation);
    return {
      operations: (['insert', 'update', 'upsert', 'delete'] as const).filter((o) => ops.has(o)),
      modes: [
        ...(ops.has('insert') ? (['insert'] as const) : []),
        ...(ops.has('update') ? (['update'] as const) : []),
        ...(ops.has('upsert') ? (['upsert'] as const) : []),
        ...(ops.has('upsert') && ops.has('delete') ? (['mirror'] as const) : []),
      ],
      maxBatchSize: this.#config.maxBatchSize ?? 100,
      supportsDelete: ops.has('delete'),
      defaultMaxRequestsPerSecond: this.#config.maxRequestsPerSecond ?? 10,
    };
  }

  async close(): Promise<void> {}

  #object(name: string): GraphqlObjectConfig {
    const o = this.#objects.get(name);
    if (!o) {
      throw new ConnectorError('object_not_found', `Object "${name}" is not configured on this GraphQL connection.`, {
        classification: 'fatal',
        status: 404,
        hint: 'Use one of the objects listed in the connection\'s config.',
      });
    }
    return o;
  }

  /** POSTs one GraphQL request with auth; on a 401 with OAuth, refreshes the token and tries once more. */
  async #send(body: { query: string; variables?: Record<string, unknown>; operationName?: string }, rowIndexes: number[], exchanges: WireExchange[], signal?: AbortSignal): Promise<HttpResponse> {
    const url = this.#config.url;
    const text = JSON.stringify(body);
    for (let attempt = 0; ; attempt++) {
      const headers: Record<string, string> = {
        'content-type': 'application/json',
        accept: 'application/graphql-response+json, application/json;q=0.9',
        ...this.#config.headers,
        ...(await this.#auth.headers()),
      };
      const started = Date.now();
      let res: HttpResponse;
      try {
        res = await httpRequest({ method: 'POST', url, headers, body: text, signal, ...this.#transport() });
      } catch (e) {
        exchanges.push(exchange(this.#redact, { method: 'POST', url, headers, body: text }, undefined, Date.now() - started, rowIndexes));
        throw e;
      }
      exchanges.push(exchange(this.#redact, { method: 'POST', url, headers, body: text }, res, res.durationMs, rowIndexes));
      if (res.status === 401 && this.#auth.isOAuth && attempt === 0) {
        this.#auth.invalidate();
        continue;
      }
      return res;
    }
  }

  /** HTTP-level failures, classified as for the REST destination. */
  #httpError(res: HttpResponse): ConnectorError | undefined {
    const s = res.status;
    const url = this.#config.url;
    if (s === 401 || s === 403) {
      return new ConnectorError(s === 401 ? 'auth_failed' : 'permission_denied', `${url} answered ${s}: ${errorMessage(s, res.body)}`, {
        classification: 'fatal',
        hint: s === 401 ? 'Check the connection\'s credentials (token, header or OAuth client).' : 'The credentials are valid but lack permission for this mutation.',
      });
    }
    if (s === 429 || s === 408 || s >= 500) {
      return new ConnectorError(s === 429 ? 'rate_limited' : 'destination_unavailable', `${url} answered ${s}: ${errorMessage(s, res.body)}`, {
        classification: 'retryable',
        retryAfterMs: parseRetryAfter(res.headers['retry-after']),
        hint: s === 429 ? 'The API is throttling requests; the batch will be retried more slowly.' : 'The API failed; the batch will be retried.',
      });
    }
    if (s >= 300 && s < 400) {
      return new ConnectorError('unexpected_redirect', `${url} answered ${s} (redirect to ${res.headers.location ?? '?'}); redirects are not followed.`, { classification: 'fatal', hint: 'Point url at the final address.' });
    }
    return undefined;
  }

  async write(req: WriteRequest): Promise<WriteResult> {
    const obj = this.#object(req.object);
    const op = obj.operations[req.operation];
    if (!op) {
      throw new ConnectorError('operation_not_supported', `Object "${req.object}" has no "${req.operation}" mutation configured.`, {
        classification: 'fatal',
        hint: `Add operations.${req.operation} to the object in the connection's config, or change the sync's mode.`,
      });
    }
    const c = this.#compile(req.object, req.operation, op);
    const exchanges: WireExchange[] = [];
    const results: (RowResult | undefined)[] = new Array(req.rows.length);
    try {
      if ((op.mode ?? 'row') === 'batch') {
        const size = Math.max(1, op.batchSize ?? 50);
        for (let s = 0; s < req.rows.length; s += size) {
          await this.#batch(req, c, req.rows.slice(s, s + size).map((_, k) => s + k), results, exchanges);
        }
      } else {
        await this.#rows(req, c, results, exchanges);
      }
    } catch (e) {
      const err = e instanceof ConnectorError ? e : new ConnectorError('network_error', String(e), { classification: 'retryable' });
      // Rows already written must not be lost: throw only when the batch can be resent as a whole.
      if (!err.retryable || !results.some((r) => r?.status === 'succeeded')) {
        if (exchanges.length) err.exchanges = exchanges;
        throw err;
      }
      for (let i = 0; i < results.length; i++) {
        results[i] ??= { status: 'rejected', code: 'not_attempted', message: `Not sent: ${err.message}`.slice(0, MAX_ROW_MESSAGE), retryable: true };
      }
      return { results: results as RowResult[], exchanges, retryAfterMs: err.retryAfterMs };
    }
    return { results: results as RowResult[], exchanges };
  }

  /** Parses a GraphQL response; throws for HTTP-level failures and for bodies that are not GraphQL responses. */
  #response(res: HttpResponse): { data?: Record<string, unknown> | null; errors: GqlError[]; hasData: boolean } {
    const err = this.#httpError(res);
    if (err) throw err;
    const body = parseJson(res.body) as { data?: Record<string, unknown> | null; errors?: GqlError[] } | undefined;
    const isGql = !!body && typeof body === 'object' && ('data' in body || Array.isArray(body.errors));
    if (!isGql) {
      if (res.status >= 400) throw new ConnectorError('http_request_refused', `${this.#config.url} answered ${res.status}: ${errorMessage(res.status, res.body)}`, { classification: 'fatal', hint: 'The server refused the request before GraphQL saw it (size limit, gateway rule?).' });
      throw new ConnectorError('invalid_response', `${this.#config.url} answered ${res.status} without a GraphQL response body.`, { classification: 'fatal', hint: 'Point url at the GraphQL endpoint.' });
    }
    const errors = Array.isArray(body.errors) ? body.errors : [];
    const authErr = errors.find((e) => AUTH_CODES.has(String(e.extensions?.code ?? '')));
    if (authErr) throw new ConnectorError('auth_failed', `${this.#config.url} refused the credentials: ${authErr.message}`, { classification: 'fatal', hint: 'Check the connection\'s credentials.' });
    return { data: body.data, errors, hasData: 'data' in body && body.data !== undefined };
  }

  #requestError(errors: GqlError[]): ConnectorError {
    return new ConnectorError('graphql_request_error', `The GraphQL API refused the request: ${messages(errors) || 'no message'}`, {
      classification: 'fatal',
      hint: 'The mutation document (or its variables\' types) does not fit the API\'s schema: fix the operation in the connection\'s config.',
    });
  }

  #rowError(req: WriteRequest, errs: GqlError[]): RowResult {
    const code = String(errs.find((e) => e.extensions?.code)?.extensions?.code ?? 'graphql_error');
    if (req.operation === 'delete' && code === 'NOT_FOUND') return { status: 'succeeded' }; // already gone
    return { status: 'rejected', code, message: messages(errs) || code, retryable: errs.every((e) => this.#retryable.has(String(e.extensions?.code ?? ''))) && errs.length > 0 };
  }

  /** A row's outcome from its mutation field's result (user errors, id). */
  #fieldResult(c: Compiled, value: unknown): RowResult {
    const userErrors = at(value, c.op.userErrorsPath);
    if (Array.isArray(userErrors) && userErrors.length) {
      const first = userErrors[0] as Record<string, unknown>;
      const code = typeof first?.code === 'string' ? first.code : 'user_error';
      const msg = userErrors.map((u) => (u && typeof u === 'object' && 'message' in u ? `${(u as { message: unknown }).message}${Array.isArray((u as { field?: unknown }).field) ? ` (${((u as { field: unknown[] }).field).join('.')})` : ''}` : JSON.stringify(u))).join('; ');
      return { status: 'rejected', code, message: msg.slice(0, MAX_ROW_MESSAGE), retryable: false };
    }
    const id = at(value, c.op.idPath ?? 'id');
    return typeof id === 'string' || typeof id === 'number' ? { status: 'succeeded', externalId: String(id) } : { status: 'succeeded' };
  }

  async #rows(req: WriteRequest, c: Compiled, results: (RowResult | undefined)[], exchanges: WireExchange[]): Promise<void> {
    let stop: ConnectorError | undefined;
    let next = 0;
    const worker = async () => {
      while (!stop && next < req.rows.length) {
        const i = next++;
        const row = req.rows[i];
        try {
          let variables: Record<string, unknown>;
          try {
            variables = c.vars(row.payload, row.recordId);
          } catch (e) {
            results[i] = { status: 'rejected', code: 'invalid_value', message: (e as Error).message.slice(0, MAX_ROW_MESSAGE), retryable: false };
            continue;
          }
          const res = await this.#send({ query: c.mutation.source, variables, ...(c.mutation.operationName ? { operationName: c.mutation.operationName } : {}) }, [i], exchanges, req.signal);
          const r = this.#response(res);
          const withPath = r.errors.filter((e) => e.path?.length);
          if (!r.hasData) {
            // A request error: nothing ran. Variable coercion means this row's values do not fit the declared types.
            if (r.errors.length && r.errors.every((e) => /^Variable "\$/.test(e.message ?? ''))) {
              results[i] = { status: 'rejected', code: 'invalid_variables', message: messages(r.errors), retryable: false };
              continue;
            }
            throw this.#requestError(r.errors);
          }
          if (withPath.length) results[i] = this.#rowError(req, withPath);
          else if (r.data === null) throw this.#requestError(r.errors);
          else results[i] = this.#fieldResult(c, r.data?.[c.key ?? '']);
        } catch (e) {
          const err = e instanceof ConnectorError ? e : new ConnectorError('network_error', String(e), { classification: 'retryable' });
          stop ??= err;
          if (err.retryable) results[i] = { status: 'rejected', code: err.code, message: err.message.slice(0, MAX_ROW_MESSAGE), retryable: true };
        }
      }
    };
    const n = Math.max(1, Math.min(this.#config.rowConcurrency ?? 8, req.rows.length));
    await Promise.all(Array.from({ length: n }, worker));
    // A retryable stop with rows written is settled by write(), which keeps the rows' results.
    if (stop) throw stop;
  }

  /**
   * One request with the rows of `idx` as aliased mutations. Variable-coercion errors name the
   * rows (`$r3_input`): those rows are rejected and the others sent again (nothing ran).
   */
  async #batch(req: WriteRequest, c: Compiled, idx: number[], results: (RowResult | undefined)[], exchanges: WireExchange[]): Promise<void> {
    let pending = idx;
    while (pending.length) {
      const variables: Record<string, unknown> = {};
      const sent: number[] = [];
      for (const i of pending) {
        const row = req.rows[i];
        try {
          const v = c.vars(row.payload, row.recordId);
          const k = sent.length;
          for (const name of c.mutation.variables) if (v[name] !== undefined) variables[batchVar(k, name)] = v[name];
          sent.push(i);
        } catch (e) {
          results[i] = { status: 'rejected', code: 'invalid_value', message: (e as Error).message.slice(0, MAX_ROW_MESSAGE), retryable: false };
        }
      }
      if (!sent.length) return;
      const res = await this.#send({ query: batchDocument(c.mutation, sent.length), variables, operationName: 'BackhaulBatch' }, sent, exchanges, req.signal);
      const r = this.#response(res);
      if (!r.hasData) {
        // A request error: nothing ran. Rows named by their variables are at fault; anything else is the document's.
        const named = new Map<number, GqlError[]>();
        let other = false;
        for (const e of r.errors) {
          const ks = [...new Set([...(e.message ?? '').matchAll(ROW_VAR)].map((m) => Number(m[1])))].filter((k) => k < sent.length);
          if (!ks.length) other = true;
          for (const k of ks) named.set(k, [...(named.get(k) ?? []), e]);
        }
        if (other || !named.size) throw this.#requestError(r.errors);
        for (const [k, errs] of named) {
          results[sent[k]] = { status: 'rejected', code: 'invalid_variables', message: messages(errs).replace(/\$r\d+_/g, '$').replace(/"r\d+_/g, '"'), retryable: false };
        }
        pending = sent.filter((_, k) => !named.has(k));
        continue;
      }
      const byAlias = new Map<string, GqlError[]>();
      const pathless: GqlError[] = [];
      for (const e of r.errors) {
        const head = e.path?.[0];
        if (typeof head === 'string') byAlias.set(head, [...(byAlias.get(head) ?? []), e]);
        else pathless.push(e);
      }
      if (pathless.length && !byAlias.size) throw this.#requestError(pathless);
      sent.forEach((i, k) => {
        const alias = batchAlias(k);
        const errs = byAlias.get(alias);
        if (errs) results[i] = this.#rowError(req, errs);
        else if (r.data === null) {
          // A non-null mutation field failed and nulled `data`: this row's outcome is unknown.
          results[i] = { status: 'rejected', code: 'result_discarded', message: 'Another row of the request failed a non-null mutation field, so the server discarded every result; this row may or may not have been written.', retryable: true };
        } else if (r.data && alias in r.data) results[i] = this.#fieldResult(c, r.data[alias]);
        else results[i] = { status: 'rejected', code: 'no_result', message: `The response has no result for ${alias}.`, retryable: true };
      });
      return;
    }
  }
}

export function openGraphqlApiDestination(config: GraphqlDestinationConfig, secrets: ResolvedSecrets, ctx: ConnectorContext): GraphqlApiDestination {
  return new GraphqlApiDestination(config, secrets, ctx);
}
