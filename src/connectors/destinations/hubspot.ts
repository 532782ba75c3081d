import { BatchRejectedError, ConnectorError } from '../../errors.ts';
import { httpRequest, parseRetryAfter, type HttpResponse } from '../../lib/http-client.ts';
import { bearerTokenSource } from '../oauth/token-manager.ts';
import type {
  ColumnType, ConnectorContext, DestinationCapabilities, DestinationConnector, DestinationField, DestinationObject, LookupMatch, LookupRequest,
  OAuthTokenSource, ResolvedSecrets, RowResult, WireExchange, WriteRequest, WriteResult,
} from '../types.ts';
import { normaliseLookupKey } from '../types.ts';
import { MAX_ROW_MESSAGE, exchange, parseJson } from './http-response.ts';
import { secretRedactor, type Redactor } from '../../lib/redact.ts';
import { hubspotErrorCode, hubspotErrorMessage, mapBatchAnswer, type HubSpotBatchError, type SentInput } from './hubspot-results.ts';

// HubSpot CRM v3 (https://developers.hubspot.com/docs/api-reference): contacts, companies,
// deals, tickets and custom objects. Writes go through the batch endpoints (at most 100 inputs
// per request): upsert by a unique property (`idProperty`), create, update by record id or by
// unique property, and archive by record id (ids found with batch/read when the engine does not
// know them). Every input carries an `objectWriteTraceId`, which HubSpot echoes in results and in
// 207 multi-status errors, so outcomes are tied to rows without relying on order.

export const HUBSPOT_BATCH_LIMIT = 100;
/** Free/Starter private apps: 100 requests per 10 s (the lowest documented burst limit). */
export const HUBSPOT_DEFAULT_RPS = 10;
/** The CRM search API allows 4 requests per second per token. */
const SEARCH_INTERVAL_MS = 250;
const STANDARD_OBJECTS: DestinationObject[] = [
  { name: 'contacts', label: 'Contacts' },
  { name: 'companies', label: 'Companies' },
  { name: 'deals', label: 'Deals' },
  { name: 'tickets', label: 'Tickets' },
];
const OBJECT_NAME = /^[A-Za-z0-9_-]{1,100}$/;
/** Properties HubSpot compares case-insensitively (contacts' e-mail is stored lower-cased). */
const CASE_INSENSITIVE = new Set(['email']);

export interface HubSpotConfig {
  baseUrl?: string;
  timeoutMs?: number;
  maxResponseBytes?: number;
  maxRequestsPerSecond?: number;
  /** IANA zone of the HubSpot account (its daily API limit resets at midnight there). */
  accountTimeZone?: string;
}

const TYPES: Record<string, ColumnType> = {
  string: 'string',
  number: 'decimal',
  bool: 'boolean',
  boolean: 'boolean',
  date: 'date',
  datetime: 'timestamp',
  enumeration: 'string',
  phone_number: 'string',
  json: 'json',
};

/** The next local midnight in an IANA zone, as an instant. */
export function nextMidnight(timeZone: string, now = Date.now()): Date {
  const fmt = new Intl.DateTimeFormat('en-CA', { timeZone, year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' });
  const p = Object.fromEntries(fmt.formatToParts(new Date(now)).map((x) => [x.type, x.value]));
  const offset = Date.UTC(+p.year, +p.month - 1, +p.day, +p.hour, +p.minute, +p.second) - Math.floor(now / 1000) * 1000;
  return new Date(Date.UTC(+p.year, +p.month - 1, +p.day + 1) - offset);
}

/** HubSpot property values are strings; null clears a property (""). */
function propertyValue(v: unknown): string {
  if (v === null || v === undefined) return '';
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  return JSON.stringify(v);
}

function properties(payload: Record<string, unknown>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(payload)) out[k] = propertyValue(v);
  return out;
}

interface Sent {
  res: HttpResponse;
  body: unknown;
}

export class HubSpotDestination implements DestinationConnector {
  readonly #config: HubSpotConfig;
  readonly #ctx: ConnectorContext;
  readonly #tokens: OAuthTokenSource & { refreshable: boolean };
  readonly #redact: Redactor;
  readonly #seenTokens = new Set<string>();
  /** Removes the connection's secrets and every OAuth token this connector used from text (the engine records through it). */
  get redactor(): Redactor {
    return this.#redact;
  }
  /** Set when HubSpot answered a DAILY 429: nothing more is sent until then. */
  #dailyBlockedUntil?: number;
  #owners?: Promise<Record<string, unknown>[]>;
  #lastSearch = 0;

  constructor(config: HubSpotConfig, secrets: ResolvedSecrets, ctx: ConnectorContext) {
    this.#config = config;
    this.#ctx = ctx;
    this.#tokens = bearerTokenSource(ctx.oauth, secrets);
    this.#redact = secretRedactor(() => [...Object.values(secrets), ...this.#seenTokens].filter((v) => v && v.length >= 4));
  }

  get #base(): string {
    return (this.#config.baseUrl ?? 'https://api.hubapi.com').replace(/\/+$/, '');
  }

  async test(): Promise<void> {
    await this.#call('GET', '/crm/v3/objects/contacts?limit=1', undefined, [], []);
  }

  async objects(): Promise<DestinationObject[]> {
    let body: unknown;
    try {
      ({ body } = await this.#call('GET', '/crm/v3/schemas', undefined, [], []));
    } catch (e) {
      // A token without crm.schemas.custom.read still writes the standard objects.
      if (e instanceof ConnectorError && e.code === 'permission_denied') return STANDARD_OBJECTS;
      throw e;
    }
    const custom = ((body as { results?: Record<string, unknown>[] })?.results ?? []).map((s) => {
      const labels = (s.labels ?? {}) as { plural?: string; singular?: string };
      return { name: String(s.fullyQualifiedName ?? s.objectTypeId ?? s.name), label: labels.plural ?? labels.singular ?? String(s.name) };
    });
    return [...STANDARD_OBJECTS, ...custom];
  }

  async fields(object: string): Promise<DestinationField[]> {
    const name = this.#objectName(object);
    const { body } = await this.#call('GET', `/crm/v3/properties/${name}?archived=false`, undefined, [], []);
    let required = new Set<string>();
    if (!STANDARD_OBJECTS.some((o) => o.name === name)) {
      // Custom objects declare their required properties in their schema.
      const { body: schema } = await this.#call('GET', `/crm/v3/schemas/${name}`, undefined, [], []);
      required = new Set(((schema as { requiredProperties?: string[] })?.requiredProperties ?? []).map(String));
    }
    const out: DestinationField[] = [];
    for (const p of (body as { results?: Record<string, unknown>[] })?.results ?? []) {
      const pname = String(p.name);
      const readOnly = (p.modificationMetadata as { readOnlyValue?: boolean } | undefined)?.readOnlyValue === true || p.calculated === true;
      // hs_object_id is read-only but addresses a record: usable as a match key (update by id).
      if (readOnly && pname !== 'hs_object_id') continue;
      const identifier = p.hasUniqueValue === true || pname === 'hs_object_id' || (name === 'contacts' && pname === 'email');
      out.push({
        name: pname,
        type: TYPES[String(p.type)] ?? 'string',
        required: required.has(pname),
        identifier,
        ...(CASE_INSENSITIVE.has(pname) ? { equality: 'case_insensitive' as const } : {}),
      });
    }
    return out;
  }

  capabilities(): DestinationCapabilities {
    return {
      operations: ['insert', 'update', 'upsert', 'delete'],
      modes: ['insert', 'update', 'upsert', 'mirror'],
      maxBatchSize: HUBSPOT_BATCH_LIMIT,
      supportsDelete: true,
      defaultMaxRequestsPerSecond: this.#config.maxRequestsPerSecond ?? HUBSPOT_DEFAULT_RPS,
      lookup: true,
      maxLookupBatchSize: HUBSPOT_BATCH_LIMIT,
    };
  }

  async close(): Promise<void> {}

  #objectName(object: string): string {
    if (!OBJECT_NAME.test(object)) {
      throw new ConnectorError('object_not_found', `"${object}" is not a HubSpot object name.`, { classification: 'fatal', status: 404, hint: 'Use contacts, companies, deals, tickets or a custom object\'s fully qualified name (GET /v1/connections/{ref}/objects).' });
    }
    return object;
  }

  /** One request with the bearer token; a 401 with an OAuth token refreshes it and tries once more. */
  async #send(method: string, path: string, body: unknown, rowIndexes: number[], exchanges: WireExchange[], signal?: AbortSignal): Promise<HttpResponse> {
    if (this.#dailyBlockedUntil !== undefined && Date.now() < this.#dailyBlockedUntil) throw this.#dailyError(this.#dailyBlockedUntil);
    const url = `${this.#base}${path}`;
    const text = body === undefined ? undefined : JSON.stringify(body);
    for (let attempt = 0; ; attempt++) {
      const token = await this.#tokens.getAccessToken(signal);
      this.#seenTokens.add(token);
      const headers: Record<string, string> = { accept: 'application/json', authorization: `Bearer ${token}`, ...(text !== undefined ? { 'content-type': 'application/json' } : {}) };
      const started = Date.now();
      let res: HttpResponse;
      try {
        res = await httpRequest({ method, url, headers, body: text, signal, timeoutMs: this.#config.timeoutMs ?? 30_000, maxResponseBytes: this.#config.maxResponseBytes ?? 10_485_760, denyPrivateNetworks: this.#ctx.denyPrivateNetworks });
      } catch (e) {
        exchanges.push(exchange(this.#redact, { method, url, headers, body: text }, undefined, Date.now() - started, rowIndexes));
        throw e;
      }
      exchanges.push(exchange(this.#redact, { method, url, headers, body: text }, res, res.durationMs, rowIndexes));
      if (res.status === 401 && this.#tokens.refreshable && attempt === 0) {
        this.#tokens.invalidate(token);
        continue;
      }
      return res;
    }
  }

  /** A request whose non-2xx answers all end the call (discovery, lookups, archive). */
  async #call(method: string, path: string, body: unknown, rowIndexes: number[], exchanges: WireExchange[], signal?: AbortSignal): Promise<Sent> {
    const res = await this.#send(method, path, body, rowIndexes, exchanges, signal);
    const parsed = res.body.length ? parseJson(res.body) : undefined;
    this.#throwForStatus(res, parsed, path);
    if (res.status >= 300) {
      throw new ConnectorError(res.status === 404 ? 'object_not_found' : `http_${res.status}`, `HubSpot answered ${res.status} to ${method} ${path}: ${this.#message(res, parsed)}`, {
        classification: 'fatal',
        status: res.status === 404 ? 404 : 422,
        hint: res.status === 404 ? 'Check the object name (GET /v1/connections/{ref}/objects).' : undefined,
      });
    }
    return { res, body: parsed };
  }

  #message(res: HttpResponse, parsed: unknown): string {
    const j = (parsed ?? {}) as HubSpotBatchError;
    return (j.message ? hubspotErrorMessage(j) : res.body.toString('utf8').slice(0, MAX_ROW_MESSAGE)) || `HTTP ${res.status}`;
  }

  #dailyError(until: number): ConnectorError {
    return new ConnectorError('daily_limit_exceeded', `HubSpot's daily API limit for this account is used up; it resets at ${new Date(until).toISOString()} (midnight, ${this.#config.accountTimeZone ?? 'UTC'}).`, {
      classification: 'fatal',
      retryLater: true,
      retryAfterMs: Math.max(0, until - Date.now()),
      hint: 'The run stopped instead of retrying against the daily limit; the next run after the reset delivers what is left. Lower the sync frequency or the rows it changes, or raise the account\'s limit.',
    });
  }

  /** Errors that end a request whatever it was: auth, throttling, locks, server errors, redirects. */
  #throwForStatus(res: HttpResponse, parsed: unknown, path: string): void {
    const s = res.status;
    const j = (parsed ?? {}) as Record<string, unknown>;
    const msg = () => this.#message(res, parsed);
    if (s === 401) {
      throw new ConnectorError('auth_failed', `HubSpot refused the credentials (${j.category ?? 401}): ${msg()}`, {
        classification: 'fatal',
        hint: this.#tokens.refreshable ? 'The OAuth access token was refused even after a refresh; reconnect the connection (POST /v1/connections/{ref}/oauth/start).' : 'Check the accessToken secret (a private app access token) or connect through OAuth.',
      });
    }
    if (s === 403) {
      throw new ConnectorError('permission_denied', `HubSpot refused access to ${path} (${j.category ?? 403}): ${msg()}`, {
        classification: 'fatal',
        hint: 'The token lacks a scope this needs (e.g. crm.objects.contacts.write, crm.schemas.custom.read, crm.objects.owners.read): add it to the private app or OAuth scopes and reconnect.',
      });
    }
    if (s === 429) {
      const policy = String(j.policyName ?? '');
      if (policy === 'DAILY') {
        const until = nextMidnight(this.#config.accountTimeZone ?? 'UTC').getTime();
        this.#dailyBlockedUntil = until;
        throw this.#dailyError(until);
      }
      // TEN_SECONDLY_ROLLING (burst) or SECONDLY (search): wait and retry.
      const interval = Number(res.headers['x-hubspot-ratelimit-interval-milliseconds']);
      throw new ConnectorError('rate_limited', `HubSpot throttled the request (${policy || 'rate limit'}): ${msg()}`, {
        classification: 'retryable',
        retryAfterMs: parseRetryAfter(res.headers['retry-after']) ?? (interval > 0 ? Math.min(interval, 10_000) / 10 : 1000),
        hint: 'HubSpot\'s burst limit was reached; the batch will be retried more slowly. Lower delivery.maxRequestsPerSecond if this persists.',
      });
    }
    if (s === 423) {
      throw new ConnectorError('record_locked', `HubSpot locked the records (${msg()}); retrying after 2 s.`, { classification: 'retryable', retryAfterMs: 2000, hint: 'HubSpot locks records under heavy writes for 2 seconds.' });
    }
    if (s === 477 || s >= 500 || s === 408) {
      throw new ConnectorError('destination_unavailable', `HubSpot answered ${s}: ${msg()}`, { classification: 'retryable', retryAfterMs: parseRetryAfter(res.headers['retry-after']), hint: 'HubSpot is unavailable or migrating the account; the batch will be retried.' });
    }
    if (s >= 300 && s < 400) {
      throw new ConnectorError('unexpected_redirect', `HubSpot answered ${s} (redirect to ${res.headers.location ?? '?'}).`, { classification: 'fatal', hint: 'Check config.baseUrl.' });
    }
  }

  async write(req: WriteRequest): Promise<WriteResult> {
    const object = this.#objectName(req.object);
    const exchanges: WireExchange[] = [];
    const results: RowResult[] = new Array(req.rows.length);
    let start = 0;
    try {
      for (; start < req.rows.length; start += HUBSPOT_BATCH_LIMIT) {
        const rows = Array.from({ length: Math.min(HUBSPOT_BATCH_LIMIT, req.rows.length - start) }, (_, k) => start + k);
        if (req.operation === 'delete') await this.#archive(req, object, rows, results, exchanges);
        else await this.#writeChunk(req, object, rows, results, exchanges);
      }
    } catch (e) {
      if (e instanceof ConnectorError && exchanges.length) e.exchanges = exchanges;
      // Records of earlier requests are written: keep their outcomes rather than have the whole
      // batch resent (a create would be duplicated); the rest are retried.
      if (start > 0 && e instanceof ConnectorError && e.retryable) {
        for (let i = start; i < req.rows.length; i++) {
          results[i] = { status: 'rejected', code: e.code, message: `Not written: ${e.message}`.slice(0, MAX_ROW_MESSAGE), retryable: true };
        }
        return { results, exchanges, retryAfterMs: e.retryAfterMs };
      }
      throw e;
    }
    return { results, exchanges };
  }

  #normaliser(field: string): (v: string) => string {
    return CASE_INSENSITIVE.has(field) ? (v) => v.trim().toLowerCase() : (v) => v;
  }

  /** create / update / upsert of up to 100 rows. */
  async #writeChunk(req: WriteRequest, object: string, rows: number[], results: RowResult[], exchanges: WireExchange[]): Promise<void> {
    const op = req.operation;
    const byId = req.matchField === 'hs_object_id';
    if (op === 'upsert' && byId) {
      throw new ConnectorError('invalid_match_key', 'HubSpot upserts by a unique property; hs_object_id (the record id) can only be used to update.', {
        classification: 'fatal',
        hint: "Use a unique property (e.g. email for contacts) as the sync's match key, or mode update.",
      });
    }
    const inputs: SentInput[] = [];
    const body: Record<string, unknown>[] = [];
    for (const i of rows) {
      const row = req.rows[i];
      const traceId = String(i);
      const raw = row.payload[req.matchField];
      const matchValue = raw === null || raw === undefined || raw === '' ? undefined : propertyValue(raw);
      const props = properties(row.payload);
      if (byId) delete props.hs_object_id; // read-only: it addresses the record
      if (op === 'insert') {
        inputs.push({ row: i, traceId });
        body.push({ properties: props, associations: [], objectWriteTraceId: traceId });
        continue;
      }
      const recordId = row.recordId ?? (byId ? matchValue : undefined);
      if (op === 'update' && recordId) {
        inputs.push({ row: i, traceId, id: recordId });
        body.push({ id: recordId, properties: props, objectWriteTraceId: traceId });
        continue;
      }
      if (!matchValue) {
        results[i] = { status: 'rejected', code: 'missing_match_value', message: `The row has no value for the match field "${req.matchField}".`, retryable: false };
        continue;
      }
      inputs.push({ row: i, traceId, id: matchValue, idProperty: req.matchField });
      body.push({ id: matchValue, idProperty: req.matchField, properties: props, objectWriteTraceId: traceId });
    }
    if (!inputs.length) return;
    const path = `/crm/v3/objects/${object}/batch/${op === 'insert' ? 'create' : op}`;
    const res = await this.#send('POST', path, { inputs: body }, inputs.map((x) => x.row), exchanges, req.signal);
    const parsed = res.body.length ? parseJson(res.body) : undefined;
    this.#throwForStatus(res, parsed, path);
    if (res.status === 404) {
      throw new ConnectorError('object_not_found', `HubSpot has no object "${object}": ${this.#message(res, parsed)}`, { classification: 'fatal', status: 404, hint: 'Check the sync\'s object (GET /v1/connections/{ref}/objects).' });
    }
    if (res.status >= 400) this.#refuseBatch(res, parsed, inputs, results);
    const answer = (parsed ?? {}) as { results?: unknown; errors?: unknown };
    const mapped = mapBatchAnswer(inputs, answer, this.#normaliser(req.matchField));
    for (const [i, r] of mapped.outcomes) results[i] = r;
    if (!mapped.unaccounted.length) return;
    if (res.status !== 207 && !mapped.unattributed.length) {
      // 200/201: every input was applied; the ones we could not tie to a result just lack their id.
      for (const i of mapped.unaccounted) results[i] = { status: 'succeeded' };
      return;
    }
    const why = mapped.unattributed.map(hubspotErrorMessage).join('; ') || 'no result and no error named these records';
    if (op === 'insert') {
      // Not created (created records are in results); resending them in a larger batch could not
      // tell us more, and a retry is safe because they do not exist.
      for (const i of mapped.unaccounted) results[i] = { status: 'rejected', code: 'hubspot_unattributed_error', message: `HubSpot did not create this record and did not say why for it: ${why}`.slice(0, MAX_ROW_MESSAGE), retryable: false };
      return;
    }
    // Update/upsert are idempotent: the engine splits the batch until each error names its row.
    throw new BatchRejectedError('hubspot_unattributed_error', `HubSpot reported errors that name no row of the batch: ${why}`.slice(0, MAX_ROW_MESSAGE), { hint: 'The batch will be split to find the rows at fault.' });
  }

  /** A 4xx for the whole request: fatal when no row can fix it, else bisected (or the row's rejection). */
  #refuseBatch(res: HttpResponse, parsed: unknown, inputs: SentInput[], results: RowResult[]): never {
    const e = (parsed ?? {}) as HubSpotBatchError;
    const detailCodes = new Set((e.errors ?? []).map((d) => d.code));
    if (detailCodes.has('PROPERTY_DOESNT_EXIST')) {
      throw new ConnectorError('property_not_found', `HubSpot has no such property: ${hubspotErrorMessage(e)}`, { classification: 'fatal', hint: 'A mapping writes a property this object does not have: fix the mapping (GET /v1/connections/{ref}/objects/{object}/fields).' });
    }
    void inputs;
    void results;
    throw new BatchRejectedError(hubspotErrorCode(e), `HubSpot refused the batch (${res.status}): ${hubspotErrorMessage(e)}`.slice(0, MAX_ROW_MESSAGE), { hint: 'The batch will be split to find the rows at fault.' });
  }

  /** Archive by record id; rows whose id is unknown are found with batch/read by their unique property first. */
  async #archive(req: WriteRequest, object: string, rows: number[], results: RowResult[], exchanges: WireExchange[]): Promise<void> {
    const ids = new Map<number, string>();
    const toFind: SentInput[] = [];
    for (const i of rows) {
      const row = req.rows[i];
      const raw = row.payload[req.matchField];
      const value = raw === null || raw === undefined || raw === '' ? undefined : propertyValue(raw);
      if (row.recordId) ids.set(i, row.recordId);
      else if (req.matchField === 'hs_object_id' && value) ids.set(i, value);
      else if (value) toFind.push({ row: i, traceId: String(i), id: value, idProperty: req.matchField });
      else results[i] = { status: 'rejected', code: 'missing_match_value', message: `The row has no value for the match field "${req.matchField}".`, retryable: false };
    }
    if (toFind.length) {
      const path = `/crm/v3/objects/${object}/batch/read`;
      const res = await this.#send('POST', path, { idProperty: req.matchField, properties: [req.matchField], inputs: toFind.map((f) => ({ id: f.id })) }, toFind.map((f) => f.row), exchanges, req.signal);
      const parsed = res.body.length ? parseJson(res.body) : undefined;
      this.#throwForStatus(res, parsed, path);
      if (res.status >= 400) this.#refuseBatch(res, parsed, toFind, results);
      const norm = this.#normaliser(req.matchField);
      const found = new Map<string, string[]>();
      for (const r of ((parsed as { results?: Record<string, unknown>[] })?.results ?? [])) {
        const v = (r.properties as Record<string, unknown> | undefined)?.[req.matchField];
        if (typeof v === 'string') found.set(norm(v), [...(found.get(norm(v)) ?? []), String(r.id)]);
      }
      for (const f of toFind) {
        const hit = found.get(norm(f.id!)) ?? [];
        if (hit.length === 1) ids.set(f.row, hit[0]);
        else if (hit.length === 0) results[f.row] = { status: 'succeeded' }; // already gone
        else results[f.row] = { status: 'rejected', code: 'ambiguous_record', message: `${hit.length} records have ${req.matchField} = ${f.id} (ids ${hit.join(', ')}); not archived.`, retryable: false };
      }
    }
    if (!ids.size) return;
    const path = `/crm/v3/objects/${object}/batch/archive`;
    const rowsWithIds = [...ids.keys()];
    const res = await this.#send('POST', path, { inputs: rowsWithIds.map((i) => ({ id: ids.get(i) })) }, rowsWithIds, exchanges, req.signal);
    const parsed = res.body.length ? parseJson(res.body) : undefined;
    this.#throwForStatus(res, parsed, path);
    if (res.status >= 400) this.#refuseBatch(res, parsed, [], results);
    // 204 No Content: archived (HubSpot ignores ids already archived).
    for (const i of rowsWithIds) results[i] = { status: 'succeeded', externalId: ids.get(i) };
  }

  async lookup(req: LookupRequest): Promise<Map<string, LookupMatch[]>> {
    // The answer has an entry per requested value, as given, listing every match.
    const out = new Map<string, LookupMatch[]>();
    const key = (v: string) => normaliseLookupKey(v, req.caseInsensitive);
    const wanted = new Map<string, string[]>();
    for (const v of req.values) {
      out.set(v, []);
      wanted.set(key(v), [...(wanted.get(key(v)) ?? []), v]);
    }
    const add = (id: string | undefined, matchValue: unknown, value: unknown) => {
      if (matchValue === null || matchValue === undefined) return;
      for (const v of wanted.get(key(String(matchValue))) ?? []) {
        const list = out.get(v)!;
        if (!list.some((m) => m.id !== undefined && m.id === id)) list.push({ ...(id !== undefined ? { id } : {}), value });
      }
    };
    if (req.object === 'owners') {
      // Owners have no batch search: list them once per run (a portal has few) and match here.
      for (const o of await this.#allOwners(req.signal)) add(String(o.id), o[req.matchField], o[req.resultField]);
      return out;
    }
    const object = this.#objectName(req.object);
    const values = [...new Set(req.caseInsensitive ? req.values.map((v) => v.trim().toLowerCase()) : req.values)];
    for (let start = 0; start < values.length; start += HUBSPOT_BATCH_LIMIT) {
      const chunk = values.slice(start, start + HUBSPOT_BATCH_LIMIT);
      let after: string | undefined;
      do {
        const wait = this.#lastSearch + SEARCH_INTERVAL_MS - Date.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        this.#lastSearch = Date.now();
        const body = {
          filterGroups: [{ filters: [{ propertyName: req.matchField, operator: 'IN', values: chunk }] }],
          properties: [...new Set([req.matchField, req.resultField])],
          limit: 100,
          ...(after ? { after } : {}),
        };
        const { body: page } = await this.#call('POST', `/crm/v3/objects/${object}/search`, body, [], [], req.signal);
        const p = (page ?? {}) as { results?: { id: string; properties?: Record<string, unknown> }[]; paging?: { next?: { after?: string } } };
        for (const r of p.results ?? []) {
          const props = r.properties ?? {};
          add(String(r.id), props[req.matchField], req.resultField === 'id' || req.resultField === 'hs_object_id' ? String(r.id) : props[req.resultField]);
        }
        after = p.paging?.next?.after;
      } while (after);
    }
    return out;
  }

  #allOwners(signal?: AbortSignal): Promise<Record<string, unknown>[]> {
    this.#owners ??= (async () => {
      const all: Record<string, unknown>[] = [];
      let after: string | undefined;
      do {
        const { body } = await this.#call('GET', `/crm/v3/owners?limit=100&archived=false${after ? `&after=${encodeURIComponent(after)}` : ''}`, undefined, [], [], signal);
        const page = (body ?? {}) as { results?: Record<string, unknown>[]; paging?: { next?: { after?: string } } };
        all.push(...(page.results ?? []));
        after = page.paging?.next?.after;
      } while (after);
      return all;
    })().catch((e) => {
      this.#owners = undefined;
      throw e;
    });
    return this.#owners;
  }
}

export function openHubSpotDestination(config: HubSpotConfig, secrets: ResolvedSecrets, ctx: ConnectorContext): DestinationConnector {
  return new HubSpotDestination(config, secrets, ctx);
}
