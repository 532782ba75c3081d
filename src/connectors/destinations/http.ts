import { BatchRejectedError, ConnectorError } from '../../errors.ts';
import { httpRequest, MAX_RESPONSE_BYTES, parseRetryAfter, type HttpResponse } from '../../lib/http-client.ts';
import { secretRedactor, type Redactor } from '../../lib/redact.ts';
import { compileTemplate, type CompiledTemplate } from '../template.ts';
import type {
  ColumnType, ConnectorContext, DestinationCapabilities, DestinationConnector, DestinationField, DestinationObject,
  LookupMatch, LookupRequest, ResolvedSecrets, RowResult, WireExchange, WriteOperation, WriteRequest, WriteResult,
} from '../types.ts';
import { HttpAuth, type HttpAuthConfig } from './http-auth.ts';
import { MAX_ROW_MESSAGE, bodyFailure, classifyBodyError, destinationMessage, errorMessage, exchange, jsonPointer, parseJson } from './http-response.ts';
import { stringifyJson } from '../../lib/json.ts';
import { HttpLookup, type HttpLookupConfig } from './http-lookup.ts';

export interface HttpOperationConfig {
  method: 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  path: string;
  mode?: 'row' | 'batch';
  batchKey?: string;
  results?: { pointer: string; statusField?: string; okField?: string; errorField?: string; idField?: string };
  /** Row mode: field of the response body holding the record's id (default `id`). */
  idField?: string;
  /** JSON pointer to a value that is `true` when a 2xx request succeeded (row and batch mode). */
  okPointer?: string;
  /** JSON pointer to an error (message or code) that, when present and non-empty, fails a 2xx request. */
  errorPointer?: string;
}

export interface HttpObjectConfig {
  name: string;
  label?: string;
  fields: { name: string; type?: ColumnType; required?: boolean; identifier?: boolean; equality?: 'exact' | 'case_insensitive' }[];
  operations: Partial<Record<WriteOperation, HttpOperationConfig>>;
}

export interface HttpDestinationConfig {
  baseUrl: string;
  auth?: HttpAuthConfig;
  headers?: Record<string, string>;
  timeoutMs?: number;
  maxResponseBytes?: number;
  maxBatchSize?: number;
  maxRequestsPerSecond?: number;
  /** Row mode: requests in flight at once within one batch. */
  rowConcurrency?: number;
  objects: HttpObjectConfig[];
  lookups?: HttpLookupConfig[];
}

interface Sent {
  res: HttpResponse;
  exchange: WireExchange;
}

const isRetryableStatus = (s: number) => s === 429 || s === 408 || s >= 500;

/**
 * Generic REST destination. Row mode sends one request per row (bounded concurrency); batch
 * mode one request per batch, reading per-row outcomes from the response when configured.
 * 429/5xx/network failures are retryable, 401/403 fatal (after one OAuth token refresh), other
 * 4xx reject the row (row mode) or the batch (batch mode, so the engine bisects). A 2xx whose
 * body reports a failure (okPointer/errorPointer, else `"ok": false` / `"success": false`) is
 * treated the same way: auth errors fatal, throttling retryable, others rejected (bodyFailure,
 * classifyBodyError in http-response.ts). Everything it returns or throws is redacted of the
 * connection's secrets in every encoding, and of the live OAuth token (`redactor`).
 */
export class HttpDestination implements DestinationConnector {
  readonly #config: HttpDestinationConfig;
  readonly #ctx: ConnectorContext;
  readonly #auth: HttpAuth;
  readonly #redact: Redactor;
  readonly #objects: Map<string, HttpObjectConfig>;
  readonly #paths = new Map<string, CompiledTemplate>();
  readonly #lookups: HttpLookup;

  constructor(config: HttpDestinationConfig, secrets: ResolvedSecrets, ctx: ConnectorContext) {
    this.#config = config;
    this.#ctx = ctx;
    this.#auth = new HttpAuth(config.auth, secrets, this.#transport());
    this.#redact = secretRedactor(() => this.#auth.secretValues, this.#auth.secretHeaderNames);
    this.#objects = new Map(config.objects.map((o) => [o.name, o]));
    this.#lookups = new HttpLookup(config.lookups ?? [], config.baseUrl, async (url, signal) => {
      const { res } = await this.#send('GET', url, undefined, [], [], signal);
      const err = this.#batchLevelError(res, url);
      if (err) throw err;
      return res;
    });
  }

  lookup(req: LookupRequest): Promise<Map<string, LookupMatch[]>> {
    return this.#lookups.lookup(req);
  }

  #transport() {
    return {
      timeoutMs: this.#config.timeoutMs ?? 30_000,
      // Connections saved before the ceiling was lowered are held to it too.
      maxResponseBytes: Math.min(this.#config.maxResponseBytes ?? 5_242_880, MAX_RESPONSE_BYTES),
      denyPrivateNetworks: this.#ctx.denyPrivateNetworks,
    };
  }

  /** Every secret of the connection (and the live OAuth token), in every form, for redaction. */
  get redactor(): Redactor {
    return this.#redact;
  }

  async test(): Promise<void> {
    try {
      await this.#test();
    } catch (e) {
      throw this.#redact.error(e);
    }
  }

  async #test(): Promise<void> {
    // Any HTTP answer means the service is reachable; only network-level failures throw.
    await httpRequest({ method: 'HEAD', url: this.#config.baseUrl, headers: { ...this.#config.headers }, ...this.#transport() });
    if (this.#auth.isOAuth) {
      this.#auth.invalidate();
      await this.#auth.token();
    }
  }

  async objects(): Promise<DestinationObject[]> {
    return this.#config.objects.map((o) => ({ name: o.name, ...(o.label ? { label: o.label } : {}) }));
  }

  async fields(object: string): Promise<DestinationField[]> {
    return this.#object(object).fields.map((f) => ({ name: f.name, type: f.type ?? 'string', required: f.required ?? false, identifier: f.identifier ?? false, ...(f.equality ? { equality: f.equality } : {}) }));
  }

  capabilities(): DestinationCapabilities {
    const ops = new Set<WriteOperation>();
    for (const o of this.#config.objects) for (const k of Object.keys(o.operations)) ops.add(k as WriteOperation);
    const operations = (['insert', 'update', 'upsert', 'delete'] as const).filter((o) => ops.has(o));
    return {
      operations,
      modes: [
        ...(ops.has('insert') ? (['insert'] as const) : []),
        ...(ops.has('update') ? (['update'] as const) : []),
        ...(ops.has('upsert') ? (['upsert'] as const) : []),
        ...(ops.has('upsert') && ops.has('delete') ? (['mirror'] as const) : []),
      ],
      maxBatchSize: this.#config.maxBatchSize ?? 100,
      supportsDelete: ops.has('delete'),
      defaultMaxRequestsPerSecond: this.#config.maxRequestsPerSecond ?? 50,
      lookup: this.#lookups.configured,
    };
  }

  async write(req: WriteRequest): Promise<WriteResult> {
    const obj = this.#object(req.object);
    const op = obj.operations[req.operation];
    if (!op) {
      throw new ConnectorError('operation_not_supported', `Object "${req.object}" has no "${req.operation}" operation configured.`, {
        classification: 'fatal',
        hint: `Add operations.${req.operation} to the object in the connection's config, or change the sync's mode.`,
      });
    }
    // The requests made so far travel with a failure too, so the row debugger can show them.
    const exchanges: WireExchange[] = [];
    try {
      const res = await ((op.mode ?? 'row') === 'batch' ? this.#writeBatch(req, op, exchanges) : this.#writeRows(req, op, exchanges));
      // A destination may echo credentials in its error body: nothing it said leaves unredacted.
      for (const r of res.results) if (r.status === 'rejected') r.message = this.#redact.text(r.message);
      return res;
    } catch (e) {
      if (e instanceof ConnectorError && exchanges.length) e.exchanges = exchanges;
      throw this.#redact.error(e);
    }
  }

  async close(): Promise<void> {}

  #object(name: string): HttpObjectConfig {
    const o = this.#objects.get(name);
    if (!o) {
      throw new ConnectorError('object_not_found', `Object "${name}" is not configured on this HTTP connection.`, {
        classification: 'fatal',
        status: 404,
        hint: 'Use one of the objects listed in the connection\'s config.',
      });
    }
    return o;
  }

  #path(op: HttpOperationConfig): CompiledTemplate {
    let t = this.#paths.get(op.path);
    if (!t) this.#paths.set(op.path, (t = compileTemplate(op.path, { encode: encodeURIComponent, requireValues: true, maxLength: 8000 })));
    return t;
  }

  #url(path: string): string {
    return `${this.#config.baseUrl.replace(/\/+$/, '')}/${path.replace(/^\/+/, '')}`;
  }

  /** One request with auth; on a 401 with OAuth, refreshes the token and tries once more. */
  async #send(method: string, url: string, body: unknown, rowIndexes: number[], exchanges: WireExchange[], signal?: AbortSignal): Promise<Sent> {
    const text = body === undefined ? undefined : body instanceof JsonText ? body.text : stringifyJson(body);
    for (let attempt = 0; ; attempt++) {
      const headers: Record<string, string> = {
        accept: 'application/json',
        ...(text !== undefined ? { 'content-type': 'application/json' } : {}),
        ...this.#config.headers,
        ...(await this.#auth.headers()),
      };
      const started = Date.now();
      let res: HttpResponse;
      try {
        res = await httpRequest({ method, url, headers, body: text, signal, ...this.#transport() });
      } catch (e) {
        exchanges.push(exchange(this.#redact, { method, url, headers, body: text }, undefined, Date.now() - started, rowIndexes));
        throw e;
      }
      const ex = exchange(this.#redact, { method, url, headers, body: text }, res, res.durationMs, rowIndexes);
      exchanges.push(ex);
      if (res.status === 401 && this.#auth.isOAuth && attempt === 0) {
        this.#auth.invalidate();
        continue;
      }
      return { res, exchange: ex };
    }
  }

  /** Errors that end the batch whatever the mode: auth, throttling, server errors, redirects. */
  #batchLevelError(res: HttpResponse, url: string): ConnectorError | undefined {
    const s = res.status;
    if (s === 401 || s === 403) {
      return new ConnectorError(s === 401 ? 'auth_failed' : 'permission_denied', `${url} answered ${s}: ${errorMessage(s, res.body)}`, {
        classification: 'fatal',
        hint: s === 401 ? 'Check the connection\'s credentials (token, password or OAuth client).' : 'The credentials are valid but lack permission for this object or operation.',
      });
    }
    if (isRetryableStatus(s)) {
      return new ConnectorError(s === 429 ? 'rate_limited' : 'destination_unavailable', `${url} answered ${s}: ${errorMessage(s, res.body)}`, {
        classification: 'retryable',
        retryAfterMs: parseRetryAfter(res.headers['retry-after']),
        hint: s === 429 ? 'The destination is throttling requests; the batch will be retried more slowly.' : 'The destination failed; the batch will be retried.',
      });
    }
    if (s >= 300 && s < 400) {
      return new ConnectorError('unexpected_redirect', `${url} answered ${s} (redirect to ${res.headers.location ?? '?'}); redirects are not followed.`, {
        classification: 'fatal',
        hint: 'Point baseUrl (and the operation path) at the final address.',
      });
    }
    return undefined;
  }

  /**
   * An error reported in a 2xx body that concerns the whole request rather than its rows: bad
   * credentials fail the run (as a 401 would), throttling is retried (as a 429 would). Undefined
   * for any other error (the row, or the batch, is rejected with the destination's message).
   */
  #bodyLevelError(message: string, res: HttpResponse, url: string): ConnectorError | undefined {
    const kind = classifyBodyError(message);
    if (kind === 'auth') {
      return new ConnectorError('auth_failed', `${url} answered ${res.status} with an authentication error in its body: ${message}`, {
        classification: 'fatal',
        hint: 'Check the connection\'s credentials (token, password or OAuth client) and their scopes.',
      });
    }
    if (kind === 'throttle') {
      return new ConnectorError('rate_limited', `${url} answered ${res.status} with a throttling error in its body: ${message}`, {
        classification: 'retryable',
        retryAfterMs: parseRetryAfter(res.headers['retry-after']),
        hint: 'The destination is throttling requests or its quota is used up; the request will be retried more slowly.',
      });
    }
    return undefined;
  }

  async #writeRows(req: WriteRequest, op: HttpOperationConfig, exchanges: WireExchange[]): Promise<WriteResult> {
    const results: (RowResult | undefined)[] = new Array(req.rows.length);
    const path = this.#path(op);
    let stop: ConnectorError | undefined;
    let next = 0;
    const worker = async () => {
      while (!stop && next < req.rows.length) {
        const i = next++;
        const payload = req.rows[i].payload;
        let url: string;
        try {
          url = this.#url(path.render(payload));
        } catch (e) {
          results[i] = { status: 'rejected', code: 'invalid_value', message: (e as Error).message, retryable: false };
          continue;
        }
        try {
          const { res } = await this.#send(op.method, url, op.method === 'DELETE' ? undefined : payload, [i], exchanges, req.signal);
          const err = this.#batchLevelError(res, url);
          if (err) {
            stop ??= err;
            if (err.retryable) results[i] = { status: 'rejected', code: err.code, message: err.message.slice(0, MAX_ROW_MESSAGE), retryable: true };
            continue;
          }
          if (res.status >= 200 && res.status < 300) {
            // A 2xx whose body says it failed (`{"ok": false, "error": "invalid_auth"}`) is not a success.
            const failure = bodyFailure(op, res.body);
            if (failure) {
              const whole = this.#bodyLevelError(failure.message, res, url);
              if (whole) {
                stop ??= whole;
                if (whole.retryable) results[i] = { status: 'rejected', code: whole.code, message: whole.message.slice(0, MAX_ROW_MESSAGE), retryable: true };
              } else {
                results[i] = { status: 'rejected', code: 'rejected', message: failure.message, retryable: false };
              }
              continue;
            }
            const id = jsonPointer(parseJson(res.body), `/${op.idField ?? 'id'}`);
            results[i] = typeof id === 'string' || typeof id === 'number' ? { status: 'succeeded', externalId: String(id) } : { status: 'succeeded' };
          } else if (res.status === 404 && req.operation === 'delete') {
            results[i] = { status: 'succeeded' }; // already gone
          } else {
            results[i] = { status: 'rejected', code: res.status === 404 ? 'not_found' : `http_${res.status}`, message: errorMessage(res.status, res.body), retryable: false };
          }
        } catch (e) {
          const err = e instanceof ConnectorError ? e : new ConnectorError('network_error', String(e), { classification: 'retryable' });
          stop ??= err;
          if (err.retryable) results[i] = { status: 'rejected', code: err.code, message: err.message.slice(0, MAX_ROW_MESSAGE), retryable: true };
        }
      }
    };
    const n = Math.max(1, Math.min(this.#config.rowConcurrency ?? 8, req.rows.length));
    await Promise.all(Array.from({ length: n }, worker));
    if (stop) {
      // Rows already written must not be lost: throw only when the batch can be resent as a whole.
      const written = results.some((r) => r?.status === 'succeeded');
      if (!stop.retryable || !written) throw stop;
      for (let i = 0; i < results.length; i++) {
        results[i] ??= { status: 'rejected', code: 'not_attempted', message: `Not sent: ${stop.message}`.slice(0, MAX_ROW_MESSAGE), retryable: true };
      }
      return { results: results as RowResult[], exchanges, retryAfterMs: stop.retryAfterMs };
    }
    return { results: results as RowResult[], exchanges };
  }

  async #writeBatch(req: WriteRequest, op: HttpOperationConfig, exchanges: WireExchange[]): Promise<WriteResult> {
    const path = this.#path(op);
    if (path.columns.length) {
      throw new ConnectorError('invalid_config', `Batch-mode path "${op.path}" cannot contain {{placeholders}}: one request carries many rows.`, { classification: 'fatal', status: 400 });
    }
    const url = this.#url(path.render({}));
    const all = req.rows.map((_, i) => i);
    // The payloads are sent as they are: their JSON text, when the engine has it, is embedded as is.
    const body = req.rows.every((r) => r.payloadJson !== undefined)
      ? new JsonText(`${op.batchKey ? `{${JSON.stringify(op.batchKey)}:` : ''}[${req.rows.map((r) => r.payloadJson).join(',')}]${op.batchKey ? '}' : ''}`)
      : op.batchKey
        ? { [op.batchKey]: req.rows.map((r) => r.payload) }
        : req.rows.map((r) => r.payload);
    const { res } = await this.#send(op.method, url, body, all, exchanges, req.signal);
    const err = this.#batchLevelError(res, url);
    if (err) throw err;
    if (res.status === 404) {
      throw new ConnectorError('object_not_found', `${url} answered 404: ${errorMessage(404, res.body)}`, {
        classification: 'fatal',
        status: 404,
        hint: `Check baseUrl and the path of "${req.object}".${req.operation}.`,
      });
    }
    if (res.status < 200 || res.status >= 300) {
      throw new BatchRejectedError(`http_${res.status}`, errorMessage(res.status, res.body), { hint: 'The destination refused the batch; it will be split to find the rows at fault.' });
    }
    const entries = op.results ? jsonPointer(parseJson(res.body), op.results.pointer) : undefined;
    // Per-row results, when present, say which rows failed (an envelope such as
    // `{"success": false, "results": […]}` may just mean "some did"); explicit pointers always apply.
    const perRow = Array.isArray(entries) && entries.length === req.rows.length;
    if (op.okPointer !== undefined || op.errorPointer !== undefined || !perRow) {
      const failure = bodyFailure(op, res.body);
      if (failure) {
        const whole = this.#bodyLevelError(failure.message, res, url);
        if (whole) throw whole;
        throw new BatchRejectedError('rejected', failure.message, { hint: 'The destination reported a failure in a 2xx answer; the batch will be split to find the rows at fault.' });
      }
    }
    if (!op.results) return { results: req.rows.map(() => ({ status: 'succeeded' })), exchanges };
    if (!Array.isArray(entries)) {
      // No results at all: when the destination said why ("daily quota exceeded"), that is the news.
      const own = destinationMessage(res.body);
      if (own) {
        const whole = this.#bodyLevelError(own, res, url);
        if (whole) throw whole;
        throw new ConnectorError('invalid_response', `${url} answered ${res.status} without results at "${op.results.pointer}": ${own}`, {
          classification: 'fatal',
          hint: `The destination's message above is the likely cause. If such an answer is normal for a successful request, fix results.pointer of "${req.object}".${req.operation}.`,
        });
      }
    }
    if (!Array.isArray(entries) || entries.length !== req.rows.length) {
      throw new ConnectorError('invalid_response', `Expected an array of ${req.rows.length} results at "${op.results.pointer}" in the response of ${url}, got ${Array.isArray(entries) ? `${entries.length} entries` : typeof entries}.`, {
        classification: 'fatal',
        hint: 'Fix results.pointer (a JSON pointer such as /results) for this operation.',
      });
    }
    const results = entries.map((e, i) => this.#entryResult(e, op.results!, req.operation, i));
    const retryable = results.filter((r) => r.status === 'rejected' && r.retryable);
    return retryable.length ? { results, exchanges, retryAfterMs: parseRetryAfter(res.headers['retry-after']) } : { results, exchanges };
  }

  #entryResult(entry: unknown, cfg: NonNullable<HttpOperationConfig['results']>, operation: WriteOperation, i: number): RowResult {
    const e = (entry && typeof entry === 'object' ? entry : {}) as Record<string, unknown>;
    const message = () => {
      const m = cfg.errorField ? e[cfg.errorField] : undefined;
      const s = typeof m === 'string' ? m : m !== undefined && m !== null ? JSON.stringify(m) : `Row ${i} was rejected by the destination.`;
      return s.slice(0, MAX_ROW_MESSAGE);
    };
    const id = e[cfg.idField ?? 'id'];
    const ok: RowResult = typeof id === 'string' || typeof id === 'number' ? { status: 'succeeded', externalId: String(id) } : { status: 'succeeded' };
    if (cfg.statusField) {
      const s = Number(e[cfg.statusField]);
      if (s >= 200 && s < 300) return ok;
      if (s === 404 && operation === 'delete') return { status: 'succeeded' };
      return { status: 'rejected', code: s === 404 ? 'not_found' : `http_${s || 'error'}`, message: message(), retryable: isRetryableStatus(s) };
    }
    if (cfg.okField) return e[cfg.okField] === true ? ok : { status: 'rejected', code: 'rejected', message: message(), retryable: false };
    const err = cfg.errorField ? e[cfg.errorField] : undefined;
    return err === undefined || err === null || err === '' || err === false ? ok : { status: 'rejected', code: 'rejected', message: message(), retryable: false };
  }
}

/** A request body that is JSON text already (sent as is). */
class JsonText {
  readonly text: string;
  constructor(text: string) {
    this.text = text;
  }
}

export function openHttpDestination(config: HttpDestinationConfig, secrets: ResolvedSecrets, ctx: ConnectorContext): DestinationConnector {
  return new HttpDestination(config, secrets, ctx);
}
