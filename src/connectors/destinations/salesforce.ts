import { ConnectorError } from '../../errors.ts';
import type { HttpResponse } from '../../lib/http-client.ts';
import type {
  ColumnType, ConnectorContext, DestinationCapabilities, DestinationConnector, DestinationField, DestinationObject,
  LookupRequest, ResolvedSecrets, RowResult, WireExchange, WriteOperation, WriteRequest, WriteResult,
} from '../types.ts';
import { MAX_ROW_MESSAGE, parseJson } from './http-response.ts';
import { BulkJobRunner, RETRYABLE_ROW_CODES, bulkCell, type BulkOperation } from './salesforce-bulk.ts';
import {
  SalesforceClient, apiErrors, describeErrors, oauthTokenSource, staticTokenSource, type SalesforceTokenSource, type SalesforceTransportConfig,
} from './salesforce-client.ts';
import { assertName, inQueries, pathValue, soqlLiteral } from './salesforce-soql.ts';

// Salesforce destination (REST API). Discovery from describe; writes through sObject
// Collections (at most 200 records a request, allOrNone=false, results in request order), or a
// Bulk API 2.0 ingest job for large batches; lookups through SOQL.
// Sources: REST API Developer Guide — sObject Describe, sObject Collections (Create, Update,
// Upsert, Delete), Query; SOAP API "Field Types" and DescribeSObjectResult/Field properties.

export interface SalesforceConfig extends SalesforceTransportConfig {
  /** Batches of at least this many rows go through Bulk API 2.0 (default 10,000). */
  bulkThreshold?: number;
  /** Largest batch the engine may send for the bulk path (default 100,000 rows). */
  bulkMaxRows?: number;
  /** First wait between polls of a bulk job (default 2 s); grows ×1.5 to `bulkPollMaxIntervalMs` (default 30 s). */
  bulkPollIntervalMs?: number;
  bulkPollMaxIntervalMs?: number;
  /** Stop waiting for a bulk job after this long (default 30 min; the next attempt resumes it). */
  bulkTimeoutMs?: number;
  /** Largest CSV uploaded to one job (default 100 MB, the documented limit before base64); larger batches are split. */
  bulkMaxUploadBytes?: number;
  /** Largest result CSV read back (default 256 MiB). */
  bulkMaxResultBytes?: number;
  maxRequestsPerSecond?: number;
}

/** The records of one sObject Collections request (at most 200). */
export const COLLECTION_LIMIT = 200;
const DEFAULT_BULK_THRESHOLD = 10_000;

interface SfField {
  name: string;
  label?: string;
  type: string;
  createable?: boolean;
  updateable?: boolean;
  nillable?: boolean;
  defaultedOnCreate?: boolean;
  externalId?: boolean;
  idLookup?: boolean;
  caseSensitive?: boolean;
  restrictedPicklist?: boolean;
  picklistValues?: { value: string; active?: boolean }[];
}

interface SfDescribe {
  name: string;
  fields: SfField[];
}

interface SaveResult {
  id?: string | null;
  success: boolean;
  created?: boolean;
  errors?: { statusCode?: string; message?: string; fields?: string[] }[];
}

/** Salesforce field type → our column type (SOAP API Developer Guide, "Field Types"). */
export function columnType(sfType: string): ColumnType {
  switch (sfType) {
    case 'boolean':
      return 'boolean';
    case 'int':
    case 'long':
      return 'integer';
    case 'double':
    case 'currency':
    case 'percent':
      return 'decimal';
    case 'date':
      return 'date';
    case 'datetime':
      return 'timestamp';
    case 'address':
    case 'location':
    case 'anyType':
    case 'complexvalue':
      return 'json';
    default:
      return 'string';
  }
}

/** Codes that mean "no record with this Id" on update by Id (the record was deleted in Salesforce). */
const GONE_CODES = new Set(['ENTITY_IS_DELETED', 'INVALID_CROSS_REFERENCE_KEY', 'NOT_FOUND', 'INVALID_ID_FIELD', 'MALFORMED_ID']);
/** Whole-request 400s that every batch would hit again: configuration, not data. */
const CONFIG_CODES = new Set(['INVALID_FIELD', 'INVALID_TYPE', 'NOT_FOUND', 'INVALID_FIELD_FOR_INSERT_UPDATE_ON_REQUEST', 'API_DISABLED_FOR_ORG', 'FUNCTIONALITY_NOT_ENABLED']);

type Kind = 'insert' | 'update' | 'upsert' | 'delete';
interface Group {
  kind: Kind;
  /** Indexes into req.rows. */
  rows: number[];
  /** Salesforce Id per row (update/delete). */
  ids?: Map<number, string>;
}

export class SalesforceDestination implements DestinationConnector {
  readonly #config: SalesforceConfig;
  readonly #client: SalesforceClient;
  readonly #bulk: BulkJobRunner;
  readonly #describes = new Map<string, Promise<SfDescribe>>();

  /**
   * `tokens` is where the session comes from; by default the shared OAuth token manager when the
   * connection is OAuth-connected (`ctx.oauth`), else the `accessToken` secret with the
   * `instanceUrl` secret or config.
   */
  constructor(config: SalesforceConfig, secrets: ResolvedSecrets, ctx: ConnectorContext, tokens?: SalesforceTokenSource) {
    this.#config = config;
    tokens ??= ctx.oauth ? oauthTokenSource(config, ctx.oauth) : staticTokenSource(config, secrets);
    this.#client = new SalesforceClient(config, secrets, tokens, ctx.denyPrivateNetworks);
    this.#bulk = new BulkJobRunner(this.#client);
  }

  async #get(path: string, what: string, exchanges: WireExchange[] = [], signal?: AbortSignal): Promise<HttpResponse> {
    const res = await this.#client.send({ method: 'GET', path, signal }, exchanges);
    const err = this.#client.requestError(res, what);
    if (err) throw err;
    return res;
  }

  async test(): Promise<void> {
    const res = await this.#get('/', 'the API version resource');
    if (res.status === 404) {
      throw new ConnectorError('api_version_not_supported', `Salesforce does not serve API version ${this.#client.apiVersion} on this instance.`, {
        classification: 'fatal',
        hint: 'Set config.apiVersion to a version the org supports (e.g. v62.0).',
      });
    }
    if (res.status !== 200) throw new ConnectorError('connection_failed', `Salesforce answered ${res.status}: ${describeErrors(res.status, res.body)}`, { classification: 'fatal' });
  }

  async objects(): Promise<DestinationObject[]> {
    const res = await this.#get('/sobjects', 'the list of objects');
    const body = parseJson(res.body) as { sobjects?: { name: string; label?: string; createable?: boolean; updateable?: boolean; deprecatedAndHidden?: boolean }[] } | undefined;
    if (res.status !== 200 || !Array.isArray(body?.sobjects)) throw new ConnectorError('invalid_response', `Salesforce answered ${res.status} to describeGlobal: ${describeErrors(res.status, res.body)}`, { classification: 'fatal' });
    return body.sobjects
      .filter((o) => (o.createable || o.updateable) && !o.deprecatedAndHidden)
      .map((o) => ({ name: o.name, ...(o.label ? { label: o.label } : {}) }));
  }

  #describe(object: string, signal?: AbortSignal): Promise<SfDescribe> {
    assertName(object, 'Object');
    let p = this.#describes.get(object);
    if (!p) {
      p = (async () => {
        const res = await this.#get(`/sobjects/${object}/describe`, `the description of ${object}`, [], signal);
        if (res.status === 404) {
          throw new ConnectorError('object_not_found', `Salesforce has no object "${object}" (or the connected user cannot see it).`, {
            classification: 'fatal',
            status: 404,
            hint: 'Use an object API name from GET /v1/connections/{ref}/objects (custom objects end in __c).',
          });
        }
        const d = parseJson(res.body) as SfDescribe | undefined;
        if (res.status !== 200 || !Array.isArray(d?.fields)) throw new ConnectorError('invalid_response', `Salesforce answered ${res.status} describing ${object}: ${describeErrors(res.status, res.body)}`, { classification: 'fatal' });
        return d;
      })();
      p.catch(() => this.#describes.delete(object));
      this.#describes.set(object, p);
    }
    return p;
  }

  async fields(object: string): Promise<DestinationField[]> {
    const d = await this.#describe(object);
    return d.fields
      .filter((f) => f.createable || f.updateable || f.name === 'Id')
      .map((f) => {
        const identifier = !!(f.externalId || f.idLookup);
        const caseInsensitive = f.type === 'email' || (identifier && f.name !== 'Id' && columnType(f.type) === 'string' && f.caseSensitive === false);
        const allowed = f.restrictedPicklist && f.picklistValues ? f.picklistValues.filter((v) => v.active !== false).map((v) => v.value) : undefined;
        return {
          name: f.name,
          type: columnType(f.type),
          required: !!(f.createable && f.nillable === false && !f.defaultedOnCreate),
          identifier,
          ...(identifier || f.type === 'email' ? { equality: caseInsensitive ? ('case_insensitive' as const) : ('exact' as const) } : {}),
          ...(allowed ? { allowedValues: allowed } : {}),
        };
      });
  }

  capabilities(): DestinationCapabilities {
    return salesforceCapabilities(this.#config);
  }

  async close(): Promise<void> {}

  // ---- lookups -------------------------------------------------------------------------------

  /**
   * Every record of `object` whose `matchField` equals one of `values`, through SOQL
   * (`SELECT Id, resultField, matchField FROM object WHERE matchField IN (…)`, batched, paged by
   * nextRecordsUrl). Each requested value maps to all its matches (the engine refuses ambiguity).
   */
  async lookup(req: LookupRequest): Promise<Map<string, { id?: string; value: unknown }[]>> {
    return this.#lookup(req, []);
  }

  async #lookup(req: LookupRequest, exchanges: WireExchange[]): Promise<Map<string, { id?: string; value: unknown }[]>> {
    const object = assertName(req.object, 'Object');
    const matchField = assertName(req.matchField, 'Match field', true);
    const resultField = assertName(req.resultField, 'Result field', true);
    const d = await this.#describe(object, req.signal);
    const sfType = d.fields.find((f) => f.name.toLowerCase() === matchField.toLowerCase())?.type;
    const norm = (v: string) => (req.caseInsensitive ? v.toLowerCase() : v);
    const out = new Map<string, { id?: string; value: unknown }[]>();
    const wanted = new Map<string, string[]>(); // normalised → requested values
    const literals: string[] = [];
    for (const v of req.values) {
      if (out.has(v)) continue;
      out.set(v, []);
      const lit = soqlLiteral(v, sfType);
      if (lit === undefined) continue;
      const k = norm(v);
      const list = wanted.get(k);
      if (list) list.push(v);
      else {
        wanted.set(k, [v]);
        literals.push(lit);
      }
    }
    const select = [...new Set(['Id', resultField, matchField])];
    for (const q of inQueries(select, object, matchField, literals)) {
      let path: string | undefined = `/query?q=${encodeURIComponent(q)}`;
      while (path) {
        const res = await this.#get(path, `a SOQL lookup on ${object}`, exchanges, req.signal);
        const body = parseJson(res.body) as { records?: Record<string, unknown>[]; done?: boolean; nextRecordsUrl?: string } | undefined;
        if (res.status !== 200 || !Array.isArray(body?.records)) {
          throw new ConnectorError('lookup_failed', `Salesforce refused the lookup on ${object}.${matchField} (${res.status}): ${describeErrors(res.status, res.body)}`, {
            classification: 'fatal',
            hint: 'Check the lookup\'s object, matchField and resultField (API names; the fields must be filterable).',
          });
        }
        for (const rec of body.records) {
          const mv = pathValue(rec, matchField);
          if (mv === undefined || mv === null) continue;
          for (const requested of wanted.get(norm(String(mv))) ?? []) {
            out.get(requested)!.push({ id: typeof rec.Id === 'string' ? rec.Id : undefined, value: pathValue(rec, resultField) ?? null });
          }
        }
        path = body.done === false && body.nextRecordsUrl ? body.nextRecordsUrl : undefined;
      }
    }
    return out;
  }

  // ---- writes --------------------------------------------------------------------------------

  async write(req: WriteRequest): Promise<WriteResult> {
    const object = assertName(req.object, 'Object');
    const matchField = assertName(req.matchField, 'Match field');
    if (!['insert', 'update', 'upsert', 'delete'].includes(req.operation)) {
      throw new ConnectorError('operation_not_supported', `Salesforce has no "${req.operation}" operation.`, { classification: 'fatal' });
    }
    const exchanges: WireExchange[] = [];
    const results: (RowResult | undefined)[] = new Array(req.rows.length);
    const threshold = req.bulkThreshold ?? this.#config.bulkThreshold ?? DEFAULT_BULK_THRESHOLD;
    try {
      const groups = await this.#plan(req, object, matchField, results, exchanges);
      for (const g of groups) {
        await this.#runGroup(req, object, matchField, g, threshold, results, exchanges);
        if (req.operation === 'upsert' && g.kind === 'update') {
          // Records deleted in Salesforce since we wrote them: upsert them again by the external id.
          const gone = g.rows.filter((i) => {
            const r = results[i];
            return r?.status === 'rejected' && GONE_CODES.has(r.code);
          });
          if (gone.length) {
            for (const i of gone) results[i] = undefined;
            await this.#runGroup(req, object, matchField, { kind: matchField === 'Id' ? 'insert' : 'upsert', rows: gone }, threshold, results, exchanges);
          }
        }
      }
    } catch (e) {
      const err = e instanceof ConnectorError ? e : new ConnectorError('network_error', String(e), { classification: 'retryable' });
      const written = results.some((r) => r?.status === 'succeeded');
      // Rows already written must not be lost: throw only when the batch can be resent as a whole.
      if (!err.retryable || !written) {
        if (exchanges.length) err.exchanges = exchanges;
        throw err;
      }
      for (let i = 0; i < results.length; i++) {
        results[i] ??= { status: 'rejected', code: 'not_attempted', message: `Not sent: ${err.message}`.slice(0, MAX_ROW_MESSAGE), retryable: true };
      }
      return { results: results as RowResult[], exchanges, retryAfterMs: err.retryAfterMs };
    }
    return { results: results.map((r) => r ?? { status: 'rejected', code: 'no_result', message: 'Salesforce returned no result for this row.', retryable: true }), exchanges };
  }

  /** Splits the rows by how Salesforce addresses them; resolves Ids by the match field where an update/delete needs one. */
  async #plan(req: WriteRequest, object: string, matchField: string, results: (RowResult | undefined)[], exchanges: WireExchange[]): Promise<Group[]> {
    const idOf = (i: number): string | undefined => {
      const r = req.rows[i];
      if (r.recordId) return r.recordId;
      const v = matchField === 'Id' ? r.payload.Id : undefined;
      return typeof v === 'string' && v ? v : undefined;
    };
    const all = req.rows.map((_, i) => i);
    if (req.operation === 'insert') return [{ kind: 'insert', rows: all }];
    if (req.operation === 'upsert') {
      const ids = new Map<number, string>();
      const rest: number[] = [];
      for (const i of all) {
        const id = idOf(i);
        if (id) ids.set(i, id);
        else rest.push(i);
      }
      const groups: Group[] = [];
      if (ids.size) groups.push({ kind: 'update', rows: [...ids.keys()], ids });
      // Collections upsert takes external ids only ("Don't use record ids"): without an Id, a row matched by Id is new.
      if (rest.length) groups.push({ kind: matchField === 'Id' ? 'insert' : 'upsert', rows: rest });
      return groups;
    }
    // update / delete: by Id; rows without one are looked up by the match field first.
    const ids = new Map<number, string>();
    const missing: number[] = [];
    for (const i of all) {
      const id = idOf(i);
      if (id) ids.set(i, id);
      else missing.push(i);
    }
    if (missing.length) {
      const d = await this.#describe(object, req.signal);
      const field = d.fields.find((f) => f.name.toLowerCase() === matchField.toLowerCase());
      const ci = field?.type === 'email' || (!!field && field.caseSensitive === false && columnType(field.type) === 'string');
      const valueOf = (i: number) => {
        const v = req.rows[i].payload[matchField];
        return v === undefined || v === null || v === '' ? undefined : String(v);
      };
      const values = [...new Set(missing.map(valueOf).filter((v): v is string => v !== undefined))];
      const found = await this.#lookup({ object, matchField, resultField: 'Id', values, caseInsensitive: ci, signal: req.signal }, exchanges);
      for (const i of missing) {
        const v = valueOf(i);
        const matches = v === undefined ? [] : found.get(v) ?? [];
        if (matches.length === 1 && matches[0].id) ids.set(i, matches[0].id);
        else if (matches.length > 1) {
          results[i] = { status: 'rejected', code: 'ambiguous_match', message: `${matches.length} ${object} records have ${matchField} = "${v}": ${matches.map((m) => m.id).join(', ')}.`.slice(0, MAX_ROW_MESSAGE), retryable: false };
        } else if (req.operation === 'delete') {
          results[i] = { status: 'succeeded' }; // nothing to delete
        } else {
          results[i] = { status: 'rejected', code: 'not_found', message: `No ${object} record has ${matchField} = "${v ?? ''}".`.slice(0, MAX_ROW_MESSAGE), retryable: false };
        }
      }
    }
    return ids.size ? [{ kind: req.operation, rows: [...ids.keys()].sort((a, b) => a - b), ids }] : [];
  }

  async #runGroup(req: WriteRequest, object: string, matchField: string, g: Group, threshold: number, results: (RowResult | undefined)[], exchanges: WireExchange[]): Promise<void> {
    if (g.rows.length >= threshold) {
      await this.#runBulk(req, object, matchField, g, results, exchanges);
      return;
    }
    for (let s = 0; s < g.rows.length; s += COLLECTION_LIMIT) {
      await this.#collection(req, object, matchField, g, g.rows.slice(s, s + COLLECTION_LIMIT), results, exchanges);
    }
  }

  #record(req: WriteRequest, object: string, g: Group, i: number): Record<string, unknown> {
    const rec: Record<string, unknown> = { attributes: { type: object } };
    for (const [k, v] of Object.entries(req.rows[i].payload)) if (k.toLowerCase() !== 'id' && k !== 'attributes') rec[k] = v;
    if (g.kind === 'update') rec.Id = g.ids!.get(i);
    return rec;
  }

  /** One sObject Collections request; a malformed-request 400 is bisected down to the rows at fault. */
  async #collection(req: WriteRequest, object: string, matchField: string, g: Group, rows: number[], results: (RowResult | undefined)[], exchanges: WireExchange[]): Promise<void> {
    let method: string;
    let path: string;
    let body: string | undefined;
    if (g.kind === 'delete') {
      method = 'DELETE';
      path = `/composite/sobjects?ids=${rows.map((i) => encodeURIComponent(g.ids!.get(i)!)).join(',')}&allOrNone=false`;
    } else {
      method = g.kind === 'insert' ? 'POST' : 'PATCH';
      path = g.kind === 'upsert' ? `/composite/sobjects/${object}/${matchField}` : '/composite/sobjects';
      body = JSON.stringify({ allOrNone: false, records: rows.map((i) => this.#record(req, object, g, i)) });
    }
    const what = `sObject Collections ${g.kind} of ${rows.length} ${object} records`;
    const res = await this.#client.send({ method, path, body, rowIndexes: rows, signal: req.signal }, exchanges);
    const err = this.#client.requestError(res, what);
    if (err) throw err;
    if (res.status === 404) {
      throw new ConnectorError('object_not_found', `Salesforce answered 404 to the ${what}: ${describeErrors(404, res.body)}`, {
        classification: 'fatal',
        status: 404,
        hint: `Check the object "${object}"${g.kind === 'upsert' ? ` and that "${matchField}" is an External ID field on it` : ''}.`,
      });
    }
    if (res.status >= 400) {
      const errs = apiErrors(res.body);
      const first = errs[0];
      if (first && CONFIG_CODES.has(first.errorCode)) {
        throw new ConnectorError(first.errorCode === 'INVALID_FIELD' ? 'invalid_field' : 'invalid_request', `Salesforce refused the ${what}: ${describeErrors(res.status, res.body)}`, {
          classification: 'fatal',
          hint: 'A mapped field or the match key is not a writable field of this object: fix the sync\'s mappings.',
        });
      }
      if (rows.length > 1) {
        const mid = rows.length >> 1;
        await this.#collection(req, object, matchField, g, rows.slice(0, mid), results, exchanges);
        await this.#collection(req, object, matchField, g, rows.slice(mid), results, exchanges);
        return;
      }
      results[rows[0]] = { status: 'rejected', code: first?.errorCode || `http_${res.status}`, message: (first?.message || describeErrors(res.status, res.body)).slice(0, MAX_ROW_MESSAGE), retryable: false };
      return;
    }
    const list = parseJson(res.body) as SaveResult[] | undefined;
    if (!Array.isArray(list) || list.length !== rows.length) {
      throw new ConnectorError('invalid_response', `Expected ${rows.length} results from the ${what}, got ${Array.isArray(list) ? list.length : typeof list}.`, { classification: 'retryable' });
    }
    list.forEach((r, n) => {
      const i = rows[n];
      if (r.success) {
        const id = r.id ?? g.ids?.get(i);
        results[i] = id ? { status: 'succeeded', externalId: id } : { status: 'succeeded' };
        return;
      }
      const e = r.errors?.[0] ?? {};
      const code = e.statusCode || 'UNKNOWN_ERROR';
      if (g.kind === 'delete' && (code === 'ENTITY_IS_DELETED' || code === 'INVALID_CROSS_REFERENCE_KEY')) {
        results[i] = { status: 'succeeded' }; // already gone
        return;
      }
      const all = (r.errors ?? []).map((x) => `${x.message ?? x.statusCode}${x.fields?.length ? ` (fields: ${x.fields.join(', ')})` : ''}`).join('; ');
      results[i] = { status: 'rejected', code, message: (all || code).slice(0, MAX_ROW_MESSAGE), retryable: RETRYABLE_ROW_CODES.has(code) };
    });
  }

  async #runBulk(req: WriteRequest, object: string, matchField: string, g: Group, results: (RowResult | undefined)[], exchanges: WireExchange[]): Promise<void> {
    const op: BulkOperation = g.kind;
    let columns: string[];
    if (op === 'delete') columns = ['Id'];
    else {
      const names = new Set<string>();
      for (const i of g.rows) for (const k of Object.keys(req.rows[i].payload)) if (k.toLowerCase() !== 'id' && k !== 'attributes') names.add(assertName(k, 'Field', true));
      const sorted = [...names].sort();
      if (op === 'update') columns = ['Id', ...sorted];
      else if (op === 'upsert') columns = [matchField, ...sorted.filter((n) => n !== matchField)];
      else columns = sorted;
    }
    const rows = g.rows.map((i) => columns.map((c) => (c === 'Id' && g.ids ? g.ids.get(i)! : bulkCell(req.rows[i].payload[c]))));
    // One upload per job, at most 100 MB of CSV ("Upload Job Data"): a larger batch becomes several jobs.
    const maxBytes = this.#config.bulkMaxUploadBytes ?? 100_000_000;
    if (g.rows.length > 1) {
      let bytes = 0;
      for (const r of rows) for (const c of r) bytes += Buffer.byteLength(c) + 3;
      if (bytes > maxBytes) {
        const mid = g.rows.length >> 1;
        await this.#runBulk(req, object, matchField, { ...g, rows: g.rows.slice(0, mid) }, results, exchanges);
        await this.#runBulk(req, object, matchField, { ...g, rows: g.rows.slice(mid) }, results, exchanges);
        return;
      }
    }
    const keyColumns = op === 'upsert' ? [matchField] : op === 'insert' ? columns : ['Id'];
    const out = await this.#bulk.run(
      { object, operation: op, externalIdFieldName: op === 'upsert' ? matchField : undefined, columns, rows, keyColumns, rowIndexes: g.rows },
      {
        pollMinMs: this.#config.bulkPollIntervalMs ?? 2000,
        pollMaxMs: this.#config.bulkPollMaxIntervalMs ?? 30_000,
        timeoutMs: this.#config.bulkTimeoutMs ?? 1_800_000,
        maxResultBytes: this.#config.bulkMaxResultBytes ?? 268_435_456,
        checkpoint: req.checkpoint,
        signal: req.signal,
      },
      exchanges,
    );
    out.forEach((r, n) => (results[g.rows[n]] = r));
  }
}

export function salesforceCapabilities(config: Partial<SalesforceConfig> = {}): DestinationCapabilities {
  const ops: WriteOperation[] = ['insert', 'update', 'upsert', 'delete'];
  return {
    operations: ops,
    modes: ['insert', 'update', 'upsert', 'mirror'],
    maxBatchSize: COLLECTION_LIMIT,
    supportsDelete: true,
    // Salesforce meters a rolling 24-hour allocation, not a per-second rate; 10 requests/s keeps
    // a sync from spending an org's allocation in minutes while still moving 2,000 rows/s.
    defaultMaxRequestsPerSecond: config.maxRequestsPerSecond ?? 10,
    lookup: true,
    bulk: { threshold: config.bulkThreshold ?? DEFAULT_BULK_THRESHOLD, maxBatchSize: config.bulkMaxRows ?? 100_000 },
  };
}

export function openSalesforceDestination(config: SalesforceConfig, secrets: ResolvedSecrets, ctx: ConnectorContext, tokens?: SalesforceTokenSource): SalesforceDestination {
  return new SalesforceDestination(config, secrets, ctx, tokens);
}
