// A local stand-in for a Salesforce org's REST API, following Salesforce's public documentation
// (REST API Developer Guide; Bulk API 2.0 and Bulk API Developer Guide; SOQL reference):
//   GET    /services/oauth2/authorize                     web server flow consent: redirects at once to redirect_uri with
//                                                         ?code&state (or ?error=access_denied when `deny`), as a user who approves
//   POST   /services/oauth2/token                         authorization_code (PKCE) and refresh_token grants → { access_token,
//                                                         refresh_token (code grant, `refresh_token` scope), instance_url, id,
//                                                         token_type, issued_at, signature, scope } (no expires_in; no new
//                                                         refresh token on refresh: Salesforce does not rotate by default)
//     Sources: Salesforce Help "OAuth 2.0 Web Server Flow for Web App Integration" and "OAuth 2.0 Refresh
//     Token Flow for Renewed Sessions". Checks: client id (invalid_client_id) and secret (invalid_client), in
//     the body or HTTP Basic; codes single use, 15 minutes, bound to redirect_uri and to the PKCE challenge
//     (no verifier → invalid_grant, a wrong one → invalid_request); unknown or revoked refresh tokens →
//     400 invalid_grant "expired access/refresh token". Not covered: scopes are recorded, not enforced; the
//     per-user limit of 5 token pairs per app; refresh token rotation and expiry policies; revoke/introspect.
//   GET    /services/data/vNN.N/                          resources of a supported version; 404 for others
//   GET    …/sobjects, …/sobjects/{o}/describe            describeGlobal / describe (fields with createable, updateable,
//                                                         nillable, defaultedOnCreate, externalId, idLookup, caseSensitive, picklists)
//   GET    …/query?q=SOQL, …/query/{locator}               SELECT … FROM o WHERE f IN (…) | f = …; pages of `queryPageSize` with nextRecordsUrl
//   POST   …/composite/sobjects                            create ≤ 200 (SaveResult[] in request order)
//   PATCH  …/composite/sobjects                            update by Id ≤ 200
//   PATCH  …/composite/sobjects/{o}/{externalIdField}      upsert ≤ 200 (UpsertResult[] with `created`)
//   DELETE …/composite/sobjects?ids=…&allOrNone=false       delete ≤ 200 ids
//   Bulk API 2.0 ingest: POST …/jobs/ingest, PUT …/jobs/ingest/{id}/batches (text/csv, once per job),
//   PATCH …/jobs/ingest/{id} {state: UploadComplete|Aborted}, GET …/jobs/ingest/{id},
//   GET …/jobs/ingest/{id}/successfulResults|failedResults|unprocessedrecords (CSV, order not that of the upload).
// Every API call needs a live bearer token (401 INVALID_SESSION_ID otherwise), counts against a
// daily allocation reported in Sforce-Limit-Info (403 REQUEST_LIMIT_EXCEEDED past it), and can be
// answered by a canned response first (503, 429 …). Records are kept in memory per object.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createHash, randomBytes } from 'node:crypto';

export interface FieldDef {
  name: string;
  type: string;
  label?: string;
  createable?: boolean;
  updateable?: boolean;
  nillable?: boolean;
  defaultedOnCreate?: boolean;
  externalId?: boolean;
  idLookup?: boolean;
  unique?: boolean;
  caseSensitive?: boolean;
  restrictedPicklist?: boolean;
  picklistValues?: string[];
}

export interface ObjectDef {
  name: string;
  label: string;
  keyPrefix: string;
  createable: boolean;
  updateable: boolean;
  fields: FieldDef[];
}

const sys = (name: string, type: string): FieldDef => ({ name, type, createable: false, updateable: false, nillable: false, defaultedOnCreate: true });

export const SCHEMA: ObjectDef[] = [
  {
    name: 'Contact',
    label: 'Contact',
    keyPrefix: '003',
    createable: true,
    updateable: true,
    fields: [
      { ...sys('Id', 'id'), idLookup: true },
      { name: 'FirstName', type: 'string', createable: true, updateable: true, nillable: true },
      { name: 'LastName', type: 'string', createable: true, updateable: true, nillable: false },
      { name: 'Email', type: 'email', createable: true, updateable: true, nillable: true, idLookup: true, caseSensitive: false },
      { name: 'External_Id__c', type: 'string', label: 'External Id', createable: true, updateable: true, nillable: true, externalId: true, unique: true, idLookup: true, caseSensitive: false },
      { name: 'LeadSource', type: 'picklist', createable: true, updateable: true, nillable: true, restrictedPicklist: true, picklistValues: ['Web', 'Phone Inquiry', 'Partner Referral', 'Other'] },
      { name: 'Score__c', type: 'double', createable: true, updateable: true, nillable: true },
      { name: 'Birthdate', type: 'date', createable: true, updateable: true, nillable: true },
      { name: 'HasOptedOutOfEmail', type: 'boolean', createable: true, updateable: true, nillable: false, defaultedOnCreate: true },
      { name: 'OwnerId', type: 'reference', createable: true, updateable: true, nillable: false, defaultedOnCreate: true },
      { name: 'Name', type: 'string', createable: false, updateable: false, nillable: true },
      sys('CreatedDate', 'datetime'),
    ],
  },
  {
    name: 'Account',
    label: 'Account',
    keyPrefix: '001',
    createable: true,
    updateable: true,
    fields: [
      { ...sys('Id', 'id'), idLookup: true },
      { name: 'Name', type: 'string', createable: true, updateable: true, nillable: false, idLookup: false },
      { name: 'Website', type: 'url', createable: true, updateable: true, nillable: true },
      { name: 'AnnualRevenue', type: 'currency', createable: true, updateable: true, nillable: true },
      { name: 'Account_Key__c', type: 'string', createable: true, updateable: true, nillable: true, externalId: true, unique: true, caseSensitive: true },
    ],
  },
  {
    name: 'User',
    label: 'User',
    keyPrefix: '005',
    createable: true,
    updateable: true,
    fields: [
      { ...sys('Id', 'id'), idLookup: true },
      { name: 'Username', type: 'string', createable: true, updateable: true, nillable: false, idLookup: true, unique: true, caseSensitive: false },
      { name: 'Email', type: 'email', createable: true, updateable: true, nillable: false },
      { name: 'IsActive', type: 'boolean', createable: true, updateable: true, nillable: false, defaultedOnCreate: true },
    ],
  },
  { name: 'ApexLog', label: 'Apex Debug Log', keyPrefix: '07L', createable: false, updateable: false, fields: [{ ...sys('Id', 'id'), idLookup: true }] },
];

export interface Canned {
  status: number;
  headers?: Record<string, string>;
  body?: unknown;
  /** Only for requests whose path (after /services/data/vNN.N) starts with this. */
  pathPrefix?: string;
  method?: string;
}

export interface BulkJob {
  id: string;
  object: string;
  operation: 'insert' | 'update' | 'upsert' | 'delete';
  externalIdFieldName?: string;
  state: 'Open' | 'UploadComplete' | 'InProgress' | 'JobComplete' | 'Failed' | 'Aborted';
  csv?: string;
  uploads: number;
  polls: number;
  errorMessage?: string;
  header: string[];
  successful: string[][];
  failed: string[][];
  unprocessed: string[][];
}

export interface RowError {
  statusCode: string;
  message: string;
  fields: string[];
}

export interface FakeSalesforce {
  url: string;
  versions: string[];
  /** Records per object, by Id. */
  records: Map<string, Map<string, Record<string, unknown>>>;
  /** Ids deleted (update → ENTITY_IS_DELETED). */
  deleted: Set<string>;
  /** Every API request (method + path after the version, status). */
  log: { method: string; path: string; status: number; records?: number }[];
  canned: Canned[];
  /** Requests allowed per "24 h" before REQUEST_LIMIT_EXCEEDED (default unlimited). */
  apiLimit: number;
  apiUsed: number;
  /** A validation rule: a reason refuses the record (FIELD_CUSTOM_VALIDATION_EXCEPTION). */
  validate?: (object: string, record: Record<string, unknown>) => string | undefined;
  queryPageSize: number;
  jobs: Map<string, BulkJob>;
  /** Keep closed bulk jobs InProgress until released. */
  holdBulk: boolean;
  /** Called on every API request before its session is checked (tests expire the session mid-run). */
  onRequest?: (r: { method: string; path: string }) => void;
  /** Awaited before an API request is handled (path after /services/data/vNN.N): tests hold requests in flight. */
  gate?: (r: { method: string; path: string }) => Promise<void>;
  /** Called on every GET of a job's info (tests use it to kill a worker mid-poll). */
  onJobPoll?: (job: BulkJob) => void;
  clientId: string;
  clientSecret: string;
  /** A refresh token valid from the start (as if a flow had completed). */
  refreshToken: string;
  tokensIssued: number;
  /** Every POST to the token endpoint, by grant (including refused ones). */
  tokenRequests: { authorization_code: number; refresh_token: number; other: number };
  /** Successful refresh_token grants. */
  refreshes: number;
  /** Successful authorization_code grants. */
  codeExchanges: number;
  /** Answer the consent with error=access_denied. */
  deny: boolean;
  /** Awaited before answering a refresh_token grant (tests hold it to force contention). */
  beforeRefresh?: () => Promise<void>;
  revokeRefreshToken(token: string): void;
  /** A fresh access token valid for `ttlSeconds`. */
  issueToken(ttlSeconds?: number): string;
  /** Every access token expires now (the session timeout passed). */
  expireTokens(): void;
  count(kind: 'collections' | 'jobsCreated' | 'uploads' | 'queries'): number;
  insert(object: string, fields: Record<string, unknown>): string;
  all(object: string): Record<string, unknown>[];
  close(): Promise<void>;
}

const def = (name: string) => SCHEMA.find((o) => o.name.toLowerCase() === name.toLowerCase());
const fieldOf = (o: ObjectDef, name: string) => o.fields.find((f) => f.name.toLowerCase() === name.toLowerCase());
const NUMERIC = new Set(['int', 'double', 'currency', 'percent', 'long']);
const sfErr = (errorCode: string, message: string, fields?: string[]) => [{ message, errorCode, ...(fields ? { fields } : {}) }];

export async function startFakeSalesforce(): Promise<FakeSalesforce> {
  const tokens = new Map<string, number>();
  const refreshTokens = new Set<string>();
  const codes = new Map<string, { clientId: string; redirectUri: string; challenge?: string; scope: string; expires: number }>();
  const counters = { collections: 0, jobsCreated: 0, uploads: 0, queries: 0 };
  const cursors = new Map<string, { rows: Record<string, unknown>[]; select: string[]; object: ObjectDef }>();
  let seq = 0;
  const sf: FakeSalesforce = {
    url: '',
    versions: ['v58.0', 'v59.0', 'v60.0', 'v61.0', 'v62.0'],
    records: new Map(SCHEMA.map((o) => [o.name, new Map()])),
    deleted: new Set(),
    log: [],
    canned: [],
    apiLimit: Infinity,
    apiUsed: 0,
    queryPageSize: 2000,
    jobs: new Map(),
    holdBulk: false,
    clientId: 'sf-client',
    clientSecret: 'sf-client-secret',
    refreshToken: `5Aep${randomBytes(16).toString('hex')}`,
    tokensIssued: 0,
    tokenRequests: { authorization_code: 0, refresh_token: 0, other: 0 },
    refreshes: 0,
    codeExchanges: 0,
    deny: false,
    revokeRefreshToken: (t) => void refreshTokens.delete(t),
    issueToken(ttlSeconds = 7200) {
      const t = `00D000000000001!${randomBytes(24).toString('base64url')}`;
      tokens.set(t, Date.now() + ttlSeconds * 1000);
      sf.tokensIssued++;
      return t;
    },
    expireTokens: () => tokens.clear(),
    count: (k) => counters[k],
    insert(object, fields) {
      const o = def(object)!;
      const id = newId(o);
      sf.records.get(o.name)!.set(id, { Id: id, OwnerId: '005000000000001', HasOptedOutOfEmail: false, ...fields });
      return id;
    },
    all: (object) => [...sf.records.get(def(object)!.name)!.values()],
    close: async () => {},
  };
  refreshTokens.add(sf.refreshToken);
  function newId(o: ObjectDef): string {
    return `${o.keyPrefix}${(++seq).toString(36).toUpperCase().padStart(12, '0')}`;
  }

  // ---- record semantics shared by sObject Collections and Bulk API ---------------------------

  type Op = 'insert' | 'update' | 'upsert' | 'delete';
  type Outcome = { ok: true; id: string; created?: boolean } | { ok: false; error: RowError; id?: string };

  /** Values that are not the field's type (the REST API refuses the whole request: JSON_PARSER_ERROR). */
  function typeProblem(f: FieldDef, v: unknown): string | undefined {
    if (v === null || v === undefined) return undefined;
    if (NUMERIC.has(f.type) && (typeof v === 'boolean' || (typeof v === 'string' ? !/^-?\d+(\.\d+)?$/.test(v) : typeof v !== 'number'))) return `Cannot deserialize instance of double from VALUE_STRING value ${String(v)}`;
    if (f.type === 'boolean' && typeof v !== 'boolean' && !/^(true|false)$/i.test(String(v))) return `Cannot deserialize instance of boolean from VALUE_STRING value ${String(v)}`;
    return undefined;
  }

  function validateRecord(o: ObjectDef, rec: Record<string, unknown>, creating: boolean): RowError | undefined {
    const readOnly: string[] = [];
    for (const [k, v] of Object.entries(rec)) {
      const f = fieldOf(o, k)!;
      if (f.name === 'Id') continue;
      if ((creating && !f.createable) || (!creating && !f.updateable)) readOnly.push(f.name);
      if (f.type === 'email' && v !== null && v !== '' && !/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(String(v))) {
        return { statusCode: 'INVALID_EMAIL_ADDRESS', message: `${f.label ?? f.name}: invalid email address: ${String(v)}`, fields: [f.name] };
      }
      if (f.restrictedPicklist && v !== null && v !== '' && !f.picklistValues!.includes(String(v))) {
        return { statusCode: 'INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST', message: `${f.label ?? f.name}: bad value for restricted picklist field: ${String(v)}`, fields: [f.name] };
      }
    }
    if (readOnly.length) {
      return { statusCode: 'INVALID_FIELD_FOR_INSERT_UPDATE', message: `Unable to create/update fields: ${readOnly.join(', ')}. Please check the security settings of this field and verify that it is read/write for your profile or permission set.`, fields: readOnly };
    }
    if (creating) {
      const missing = o.fields.filter((f) => f.createable && f.nillable === false && !f.defaultedOnCreate && (rec[f.name] === undefined || rec[f.name] === null || rec[f.name] === ''));
      if (missing.length) return { statusCode: 'REQUIRED_FIELD_MISSING', message: `Required fields are missing: [${missing.map((f) => f.name).join(', ')}]`, fields: missing.map((f) => f.name) };
    }
    const reason = sf.validate?.(o.name, rec);
    if (reason) return { statusCode: 'FIELD_CUSTOM_VALIDATION_EXCEPTION', message: reason, fields: [] };
    return undefined;
  }

  const canon = (o: ObjectDef, rec: Record<string, unknown>) => Object.fromEntries(Object.entries(rec).map(([k, v]) => [fieldOf(o, k)!.name, v === '' ? null : v]));
  const norm = (f: FieldDef, v: unknown) => (f.caseSensitive === false || f.type === 'email' ? String(v).toLowerCase() : String(v));

  type Index = Map<string, Record<string, unknown>[]>;
  /** Records of `o` by the normalised value of `f` (built per request: upserts of 100k rows must not scan the store per row). */
  function buildIndex(o: ObjectDef, f: FieldDef): Index {
    const idx: Index = new Map();
    for (const r of sf.records.get(o.name)!.values()) {
      if (r[f.name] === undefined || r[f.name] === null) continue;
      const k = norm(f, r[f.name]);
      const list = idx.get(k);
      if (list) list.push(r);
      else idx.set(k, [r]);
    }
    return idx;
  }

  function apply(o: ObjectDef, op: Op, input: Record<string, unknown>, extField?: FieldDef, index?: Index): Outcome {
    const store = sf.records.get(o.name)!;
    const rec = canon(o, input);
    if (op === 'delete' || op === 'update') {
      const id = String(rec.Id ?? '');
      if (sf.deleted.has(id)) return { ok: false, error: { statusCode: 'ENTITY_IS_DELETED', message: 'entity is deleted', fields: [] } };
      const cur = store.get(id);
      if (!cur) return { ok: false, error: { statusCode: 'INVALID_CROSS_REFERENCE_KEY', message: 'invalid cross reference id', fields: [] } };
      if (op === 'delete') {
        store.delete(id);
        sf.deleted.add(id);
        return { ok: true, id };
      }
      const { Id: _, ...changes } = rec;
      const bad = validateRecord(o, changes, false);
      if (bad) return { ok: false, error: bad, id };
      Object.assign(cur, changes);
      return { ok: true, id };
    }
    if (op === 'upsert') {
      const ext = extField!;
      const v = rec[ext.name];
      if (v === undefined || v === null) return { ok: false, error: { statusCode: 'MISSING_ARGUMENT', message: `${ext.name} not specified`, fields: [] } };
      const idx = index ?? buildIndex(o, ext);
      const matches = idx.get(norm(ext, v)) ?? [];
      if (matches.length > 1) return { ok: false, error: { statusCode: 'DUPLICATE_EXTERNAL_ID', message: `${o.name}: more than one record found for external id field: [${matches.map((m) => m.Id).join(', ')}]`, fields: [ext.name] } };
      if (matches.length === 1) {
        const bad = validateRecord(o, rec, false);
        if (bad) return { ok: false, error: bad };
        Object.assign(matches[0], rec);
        return { ok: true, id: String(matches[0].Id), created: false };
      }
    }
    const bad = validateRecord(o, rec, true);
    if (bad) return { ok: false, error: bad };
    const id = newId(o);
    const created = { Id: id, OwnerId: '005000000000001', HasOptedOutOfEmail: false, ...rec };
    store.set(id, created);
    if (index && extField && rec[extField.name] !== undefined && rec[extField.name] !== null) {
      const k = norm(extField, rec[extField.name]);
      index.set(k, [...(index.get(k) ?? []), created]);
    }
    return { ok: true, id, created: true };
  }

  // ---- HTTP -----------------------------------------------------------------------------------

  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', async () => {
      try {
        const path = /^\/services\/data\/v\d+\.\d(\/[^?]*)?/.exec(req.url ?? '')?.[1] ?? '/';
        if (sf.gate) await sf.gate({ method: req.method ?? 'GET', path });
        handle(req, res, Buffer.concat(chunks).toString('utf8'));
      } catch (e) {
        send(res, 500, sfErr('UNKNOWN_EXCEPTION', `fake error: ${(e as Error).message}`));
      }
    });
  });

  function send(res: ServerResponse, status: number, body?: unknown, headers: Record<string, string> = {}, type = 'application/json;charset=UTF-8') {
    if (res.headersSent) return;
    const text = body === undefined ? '' : typeof body === 'string' ? body : JSON.stringify(body);
    res.writeHead(status, { 'content-type': type, ...headers });
    res.end(text);
  }

  function handle(req: IncomingMessage, res: ServerResponse, text: string) {
    const url = new URL(req.url ?? '/', 'http://x');
    const method = req.method ?? 'GET';
    if (url.pathname === '/services/oauth2/token' && method === 'POST') return void token(req, res, new URLSearchParams(text));
    if (url.pathname === '/services/oauth2/authorize' && method === 'GET') return authorize(res, url.searchParams);
    const m = /^\/services\/data\/(v\d+\.\d)(\/.*)?$/.exec(url.pathname);
    if (!m) return send(res, 404, sfErr('NOT_FOUND', 'The requested resource does not exist'));
    sf.onRequest?.({ method, path: m[2] ?? '/' });
    const auth = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    const exp = auth ? tokens.get(auth) : undefined;
    const path = (m[2] ?? '/').replace(/\/+$/, '') || '/';
    const entry = { method, path: `${path}${url.search}`, status: 0, records: undefined as number | undefined };
    sf.log.push(entry);
    const reply = (status: number, body?: unknown, type?: string) => {
      entry.status = status;
      send(res, status, body, { 'sforce-limit-info': `api-usage=${sf.apiUsed}/${sf.apiLimit === Infinity ? 15000 : sf.apiLimit}` }, type);
    };
    if (!exp || exp < Date.now()) return reply(401, sfErr('INVALID_SESSION_ID', 'Session expired or invalid'));
    if (++sf.apiUsed > sf.apiLimit) return reply(403, sfErr('REQUEST_LIMIT_EXCEEDED', 'TotalRequests Limit exceeded.'));
    const ci = sf.canned.findIndex((c) => (!c.pathPrefix || path.startsWith(c.pathPrefix)) && (!c.method || c.method === method));
    if (ci >= 0) {
      const c = sf.canned.splice(ci, 1)[0];
      entry.status = c.status;
      return send(res, c.status, c.body, c.headers ?? {});
    }
    if (!sf.versions.includes(m[1])) return reply(404, sfErr('NOT_FOUND', 'The requested resource does not exist'));
    const version = m[1];
    const body = () => (text ? JSON.parse(text) : undefined);

    if (path === '/' && method === 'GET') return reply(200, { sobjects: `/services/data/${version}/sobjects`, query: `/services/data/${version}/query`, jobs: `/services/data/${version}/jobs` });
    if (path === '/sobjects' && method === 'GET') {
      return reply(200, { encoding: 'UTF-8', maxBatchSize: 200, sobjects: SCHEMA.map((o) => ({ name: o.name, label: o.label, keyPrefix: o.keyPrefix, createable: o.createable, updateable: o.updateable, deletable: o.createable, queryable: true, custom: o.name.endsWith('__c'), deprecatedAndHidden: false })) });
    }
    let r = /^\/sobjects\/([^/]+)\/describe$/.exec(path);
    if (r && method === 'GET') {
      const o = def(r[1]);
      if (!o) return reply(404, sfErr('NOT_FOUND', 'The requested resource does not exist'));
      return reply(200, {
        name: o.name,
        label: o.label,
        createable: o.createable,
        updateable: o.updateable,
        fields: o.fields.map((f) => ({
          name: f.name,
          label: f.label ?? f.name,
          type: f.type,
          createable: !!f.createable,
          updateable: !!f.updateable,
          nillable: f.nillable !== false,
          defaultedOnCreate: !!f.defaultedOnCreate,
          externalId: !!f.externalId,
          idLookup: !!f.idLookup,
          unique: !!f.unique,
          caseSensitive: !!f.caseSensitive,
          restrictedPicklist: !!f.restrictedPicklist,
          picklistValues: (f.picklistValues ?? []).map((v) => ({ value: v, label: v, active: true, defaultValue: false })),
        })),
      });
    }
    if (path === '/query' && method === 'GET') return query(url.searchParams.get('q') ?? '', version, reply);
    r = /^\/query\/([\w-]+)$/.exec(path);
    if (r && method === 'GET') return queryMore(r[1], version, reply);
    if (path === '/composite/sobjects' || path.startsWith('/composite/sobjects/')) return collections(method, path, url, body, reply, entry);
    if (path.startsWith('/jobs/ingest')) return bulk(method, path, text, req.headers['content-type'] ?? '', version, reply);
    return reply(404, sfErr('NOT_FOUND', 'The requested resource does not exist'));
  }

  const oauthError = (res: ServerResponse, status: number, error: string, description: string) => send(res, status, { error, error_description: description });

  function authorize(res: ServerResponse, q: URLSearchParams) {
    if (q.get('client_id') !== sf.clientId) return oauthError(res, 400, 'invalid_client_id', 'client identifier invalid');
    const redirect = q.get('redirect_uri');
    if (!redirect) return oauthError(res, 400, 'redirect_uri_mismatch', 'redirect_uri must match configuration');
    if (q.get('response_type') !== 'code') return oauthError(res, 400, 'unsupported_response_type', 'response type not supported');
    const back = new URL(redirect);
    if (sf.deny) {
      back.searchParams.set('error', 'access_denied');
      back.searchParams.set('error_description', 'end-user denied authorization');
    } else {
      const code = `aPr${randomBytes(18).toString('base64url')}`;
      codes.set(code, { clientId: sf.clientId, redirectUri: redirect, challenge: q.get('code_challenge') ?? undefined, scope: q.get('scope') ?? '', expires: Date.now() + 15 * 60_000 });
      back.searchParams.set('code', code);
    }
    if (q.get('state')) back.searchParams.set('state', q.get('state')!);
    res.writeHead(302, { location: back.toString() });
    res.end();
  }

  /** The token response of both grants (no expires_in: the session timeout is the org's setting). */
  const tokenResponse = (refreshToken: string | undefined, scope: string) => ({
    access_token: sf.issueToken(),
    ...(refreshToken ? { refresh_token: refreshToken } : {}),
    signature: randomBytes(32).toString('base64'),
    scope,
    instance_url: sf.url,
    id: `${sf.url}/id/00D000000000001AAA/005000000000001AAA`,
    token_type: 'Bearer',
    issued_at: String(Date.now()),
  });

  async function token(req: IncomingMessage, res: ServerResponse, form: URLSearchParams) {
    const grant = form.get('grant_type');
    sf.tokenRequests[grant === 'authorization_code' || grant === 'refresh_token' ? grant : 'other']++;
    let id = form.get('client_id');
    let secret = form.get('client_secret');
    const basic = /^Basic (.+)$/.exec(req.headers.authorization ?? '');
    if (basic) [id, secret] = Buffer.from(basic[1], 'base64').toString('utf8').split(':').map(decodeURIComponent);
    if (id !== sf.clientId) return oauthError(res, 400, 'invalid_client_id', 'client identifier invalid');
    if (secret !== sf.clientSecret) return oauthError(res, 400, 'invalid_client', 'invalid client credentials');
    if (grant === 'authorization_code') {
      const code = codes.get(form.get('code') ?? '');
      codes.delete(form.get('code') ?? ''); // single use
      if (!code || code.expires < Date.now()) return oauthError(res, 400, 'invalid_grant', 'authorization code expired');
      if (code.redirectUri !== form.get('redirect_uri')) return oauthError(res, 400, 'invalid_grant', 'redirect_uri mismatch');
      if (code.challenge) {
        const verifier = form.get('code_verifier');
        if (!verifier) return oauthError(res, 400, 'invalid_grant', 'invalid code verifier');
        if (createHash('sha256').update(verifier).digest('base64url') !== code.challenge) return oauthError(res, 400, 'invalid_request', 'invalid code verifier');
      }
      sf.codeExchanges++;
      const scopes = code.scope.split(/\s+/);
      // A refresh token only when the app may have one and it was asked for (refresh_token / offline_access).
      const rt = scopes.includes('refresh_token') || scopes.includes('offline_access') || scopes.includes('full') ? `5Aep${randomBytes(16).toString('hex')}` : undefined;
      if (rt) refreshTokens.add(rt);
      return send(res, 200, tokenResponse(rt, code.scope || 'api'));
    }
    if (grant === 'refresh_token') {
      await sf.beforeRefresh?.();
      if (!refreshTokens.has(form.get('refresh_token') ?? '')) return oauthError(res, 400, 'invalid_grant', 'expired access/refresh token');
      sf.refreshes++;
      return send(res, 200, tokenResponse(undefined, 'api refresh_token'));
    }
    return oauthError(res, 400, 'unsupported_grant_type', 'grant type not supported');
  }

  // ---- SOQL (the subset the connector sends) ---------------------------------------------------

  function literals(list: string): string[] | undefined {
    const out: string[] = [];
    let i = 0;
    const s = list.trim();
    while (i < s.length) {
      if (s[i] === "'") {
        let v = '';
        i++;
        for (;;) {
          if (i >= s.length) return undefined; // unterminated
          const c = s[i];
          if (c === '\\') {
            const n = s[i + 1];
            const map: Record<string, string> = { n: '\n', r: '\r', t: '\t', b: '\b', f: '\f', '"': '"', "'": "'", '\\': '\\' };
            if (!(n in map)) return undefined; // invalid escape: MALFORMED_QUERY
            v += map[n];
            i += 2;
          } else if (c === "'") {
            i++;
            break;
          } else {
            v += c;
            i++;
          }
        }
        out.push(v);
      } else {
        const m = /^[^,\s]+/.exec(s.slice(i));
        if (!m) return undefined;
        out.push(m[0]);
        i += m[0].length;
      }
      while (s[i] === ' ') i++;
      if (i < s.length) {
        if (s[i] !== ',') return undefined;
        i++;
        while (s[i] === ' ') i++;
      }
    }
    return out;
  }

  function query(q: string, version: string, reply: (s: number, b?: unknown) => void) {
    counters.queries++;
    const m = /^SELECT\s+(.+?)\s+FROM\s+(\w+)\s+WHERE\s+(\w+)\s+(IN\s*\((.*)\)|=\s*(.+))\s*$/is.exec(q.trim());
    if (!m) return reply(400, sfErr('MALFORMED_QUERY', `unexpected token in: ${q.slice(0, 200)}`));
    const o = def(m[2]);
    if (!o) return reply(400, sfErr('INVALID_TYPE', `sObject type '${m[2]}' is not supported.`));
    const select = m[1].split(',').map((s) => s.trim());
    for (const s of [...select, m[3]]) if (!fieldOf(o, s)) return reply(400, sfErr('INVALID_FIELD', `No such column '${s}' on entity '${o.name}'.`));
    const vals = literals(m[5] ?? m[6]);
    if (!vals) return reply(400, sfErr('MALFORMED_QUERY', 'malformed string literal or list'));
    const f = fieldOf(o, m[3])!;
    if (vals.some((v) => NUMERIC.has(f.type) !== /^-?\d+(\.\d+)?$/.test(v) && NUMERIC.has(f.type))) return reply(400, sfErr('INVALID_QUERY_FILTER_OPERATOR', `invalid number literal for ${f.name}`));
    // SOQL string comparison is case-insensitive, except on case-sensitive unique fields.
    const key = (v: unknown) => (f.caseSensitive ? String(v) : String(v).toLowerCase());
    const wanted = new Set(vals.map(key));
    const rows = [...sf.records.get(o.name)!.values()].filter((r) => r[f.name] !== undefined && r[f.name] !== null && wanted.has(key(r[f.name]))).sort((a, b) => String(a.Id).localeCompare(String(b.Id)));
    const id = `01g${randomBytes(6).toString('hex')}`;
    cursors.set(id, { rows, select, object: o });
    return queryMore(`${id}-0`, version, reply, rows.length);
  }

  function queryMore(locator: string, version: string, reply: (s: number, b?: unknown) => void, _total?: number) {
    const [id, off] = locator.split('-');
    const c = cursors.get(id);
    if (!c) return reply(400, sfErr('INVALID_QUERY_LOCATOR', 'invalid query locator'));
    const start = Number(off);
    const page = c.rows.slice(start, start + sf.queryPageSize);
    const done = start + page.length >= c.rows.length;
    return reply(200, {
      totalSize: c.rows.length,
      done,
      ...(done ? {} : { nextRecordsUrl: `/services/data/${version}/query/${id}-${start + page.length}` }),
      records: page.map((r) => ({
        attributes: { type: c.object.name, url: `/services/data/${version}/sobjects/${c.object.name}/${r.Id}` },
        ...Object.fromEntries(c.select.map((s) => { const fd = fieldOf(c.object, s)!; return [fd.name, r[fd.name] ?? null]; })),
      })),
    });
  }

  // ---- sObject Collections --------------------------------------------------------------------

  function collections(method: string, path: string, url: URL, body: () => any, reply: (s: number, b?: unknown) => void, entry: { records?: number }) {
    counters.collections++;
    if (method === 'DELETE' && path === '/composite/sobjects') {
      const ids = (url.searchParams.get('ids') ?? '').split(',').filter(Boolean);
      entry.records = ids.length;
      if (!ids.length) return reply(400, sfErr('MISSING_ARGUMENT', 'ids not specified'));
      if (ids.length > 200) return reply(400, sfErr('EXCEEDED_ID_LIMIT', 'record limit reached. cannot submit more than 200 records into this call'));
      return reply(200, ids.map((id) => {
        const o = SCHEMA.find((x) => id.startsWith(x.keyPrefix));
        const out = o ? apply(o, 'delete', { Id: id }) : { ok: false as const, error: { statusCode: 'MALFORMED_ID', message: `malformed id ${id}`, fields: [] } };
        return out.ok ? { id, success: true, errors: [] } : { id, success: false, errors: [out.error] };
      }));
    }
    const b = body();
    const records = b?.records;
    if (!Array.isArray(records)) return reply(400, sfErr('JSON_PARSER_ERROR', 'records is required'));
    entry.records = records.length;
    if (records.length > 200) return reply(400, sfErr('EXCEEDED_ID_LIMIT', 'record limit reached. cannot submit more than 200 records into this call'));
    if (b.allOrNone !== false && b.allOrNone !== undefined) return reply(400, sfErr('INVALID_INPUT', 'this fake serves allOrNone=false only'));
    const upsert = /^\/composite\/sobjects\/(\w+)\/(\w+)$/.exec(path);
    let op: Op;
    let o: ObjectDef | undefined;
    let ext: FieldDef | undefined;
    if (upsert && method === 'PATCH') {
      op = 'upsert';
      o = def(upsert[1]);
      if (!o) return reply(404, sfErr('NOT_FOUND', 'The requested resource does not exist'));
      ext = fieldOf(o, upsert[2]);
      if (!ext || !(ext.externalId || ext.idLookup) || ext.name === 'Id') return reply(404, sfErr('NOT_FOUND', `Provided external ID field does not exist or is not accessible: ${upsert[2]}`));
    } else if (path === '/composite/sobjects' && (method === 'POST' || method === 'PATCH')) {
      op = method === 'POST' ? 'insert' : 'update';
    } else return reply(405, sfErr('METHOD_NOT_ALLOWED', `HTTP Method '${method}' not allowed`));
    // Whole-request checks: every record names its type; every field exists and has its type's shape.
    for (const rec of records) {
      const type = rec?.attributes?.type;
      const ro = def(String(type ?? ''));
      if (!ro) return reply(400, sfErr('INVALID_TYPE', `sObject type '${type ?? ''}' is not supported. Each record needs attributes.type.`));
      if (o && ro.name !== o.name) return reply(400, sfErr('INVALID_TYPE', `all records must be of type ${o.name}`));
      for (const [k, v] of Object.entries(rec)) {
        if (k === 'attributes') continue;
        const f = fieldOf(ro, k);
        if (!f) return reply(400, sfErr('INVALID_FIELD', `No such column '${k}' on sobject of type ${ro.name}`));
        const p = typeProblem(f, v);
        if (p) return reply(400, sfErr('JSON_PARSER_ERROR', `${p} at [line:1, column:1]`));
      }
      if (op === 'upsert' && rec.Id !== undefined) return reply(400, sfErr('INVALID_FIELD', 'Id not allowed in upsert by external id'));
      if (op === 'update' && !rec.Id && !rec.id) return reply(400, sfErr('MISSING_ARGUMENT', 'Id not specified in an update call'));
    }
    // Duplicate external ids in one request are refused on each of them.
    const dupes = new Set<string>();
    if (op === 'upsert') {
      const seen = new Map<string, number>();
      for (const rec of records) {
        const { attributes: _, ...fields } = rec;
        const k = norm(ext!, canon(o!, fields)[ext!.name] ?? '');
        seen.set(k, (seen.get(k) ?? 0) + 1);
      }
      for (const [k, n] of seen) if (n > 1) dupes.add(k);
    }
    const index = ext ? buildIndex(o!, ext) : undefined;
    return reply(200, records.map((rec: Record<string, unknown>) => {
      const { attributes, ...fields } = rec as { attributes: { type: string } } & Record<string, unknown>;
      const ro = def(attributes.type)!;
      if (op === 'update' && fields.id !== undefined) {
        fields.Id = fields.id;
        delete fields.id;
      }
      if (op === 'upsert' && dupes.has(norm(ext!, canon(ro, fields)[ext!.name] ?? ''))) {
        return { id: null, success: false, errors: [{ statusCode: 'DUPLICATE_VALUE', message: `Duplicate external id specified: ${String(canon(ro, fields)[ext!.name])}`, fields: [ext!.name] }] };
      }
      const out = apply(ro, op, fields, ext, index);
      if (out.ok) return { id: out.id, success: true, errors: [], ...(op === 'upsert' ? { created: !!out.created } : {}) };
      return { id: out.id ?? null, success: false, errors: [out.error], ...(op === 'upsert' ? { created: false } : {}) };
    }));
  }

  // ---- Bulk API 2.0 ---------------------------------------------------------------------------

  function parseCsv(text: string): string[][] | undefined {
    // RFC 4180 with LF line endings, as the job declares (independent of the connector's library).
    const rows: string[][] = [];
    let row: string[] = [];
    let cell = '';
    let i = 0;
    let quoted = false;
    let fresh = true;
    while (i < text.length) {
      const c = text[i];
      if (quoted) {
        if (c === '"') {
          if (text[i + 1] === '"') {
            cell += '"';
            i += 2;
            continue;
          }
          quoted = false;
          i++;
          if (i < text.length && text[i] !== ',' && text[i] !== '\n') return undefined;
          continue;
        }
        cell += c;
        i++;
        continue;
      }
      if (c === '"' && fresh) {
        quoted = true;
        fresh = false;
        i++;
        continue;
      }
      if (c === '"') return undefined; // a quote inside an unquoted cell
      if (c === '\r') return undefined; // the job said LF
      if (c === ',') {
        row.push(cell);
        cell = '';
        fresh = true;
        i++;
        continue;
      }
      if (c === '\n') {
        row.push(cell);
        rows.push(row);
        row = [];
        cell = '';
        fresh = true;
        i++;
        continue;
      }
      cell += c;
      fresh = false;
      i++;
    }
    if (quoted) return undefined;
    if (cell !== '' || row.length) {
      row.push(cell);
      rows.push(row);
    }
    return rows;
  }

  const csvOut = (rows: string[][]) => rows.map((r) => r.map((c) => `"${c.replace(/"/g, '""')}"`).join(',')).join('\n') + '\n';

  function jobInfo(j: BulkJob, version: string) {
    return {
      id: j.id,
      operation: j.operation,
      object: j.object,
      createdById: '005000000000001',
      state: j.state,
      ...(j.externalIdFieldName ? { externalIdFieldName: j.externalIdFieldName } : {}),
      concurrencyMode: 'Parallel',
      contentType: 'CSV',
      apiVersion: Number(version.slice(1)),
      jobType: 'V2Ingest',
      contentUrl: `services/data/${version}/jobs/ingest/${j.id}/batches`,
      lineEnding: 'LF',
      columnDelimiter: 'COMMA',
      numberRecordsProcessed: j.successful.length + j.failed.length,
      numberRecordsFailed: j.failed.length,
      retries: 0,
      ...(j.errorMessage ? { errorMessage: j.errorMessage } : {}),
    };
  }

  function processJob(j: BulkJob) {
    const o = def(j.object)!;
    const rows = parseCsv(j.csv ?? '');
    if (!rows || !rows.length) {
      j.state = 'Failed';
      j.errorMessage = 'InvalidBatch : Failed to parse CSV';
      return;
    }
    const [header, ...data] = rows;
    j.header = header;
    for (const h of header) {
      if (!fieldOf(o, h)) {
        j.state = 'Failed';
        j.errorMessage = `InvalidBatch : Field name not found : ${h}`;
        j.unprocessed = data;
        return;
      }
    }
    if (j.operation === 'upsert' && !header.some((h) => h.toLowerCase() === j.externalIdFieldName!.toLowerCase())) {
      j.state = 'Failed';
      j.errorMessage = `InvalidBatch : Field name not found : ${j.externalIdFieldName}`;
      j.unprocessed = data;
      return;
    }
    const ext = j.externalIdFieldName ? fieldOf(o, j.externalIdFieldName) : undefined;
    const index = ext ? buildIndex(o, ext) : undefined;
    for (const cells of data) {
      if (cells.length !== header.length) {
        j.failed.push(['', `INVALID_FIELD:Row has ${cells.length} columns, header has ${header.length}: --`, ...cells]);
        continue;
      }
      const rec: Record<string, unknown> = {};
      let typeErr: RowError | undefined;
      header.forEach((h, k) => {
        const f = fieldOf(o, h)!;
        const c = cells[k];
        if (c === '') return; // empty: leave the field unchanged
        const v = c === '#N/A' ? null : NUMERIC.has(f.type) && /^-?\d+(\.\d+)?$/.test(c) ? Number(c) : f.type === 'boolean' && /^(true|false)$/i.test(c) ? c.toLowerCase() === 'true' : c;
        if (!typeErr && typeProblem(f, v)) typeErr = { statusCode: 'INVALID_TYPE_ON_FIELD_IN_RECORD', message: `${f.name}: value not of required type: ${c}`, fields: [f.name] };
        rec[f.name] = v;
      });
      const out: Outcome = typeErr ? { ok: false, error: typeErr } : apply(o, j.operation, rec, ext, index);
      if (out.ok) j.successful.push([out.id, String(!!out.created), ...cells]);
      else j.failed.push([out.id ?? '', `${out.error.statusCode}:${out.error.message}:${out.error.fields.join(',')} --`, ...cells]);
    }
    j.state = 'JobComplete';
  }

  function bulk(method: string, path: string, text: string, contentType: string, version: string, reply: (s: number, b?: unknown, t?: string) => void) {
    if (path === '/jobs/ingest' && method === 'POST') {
      const b = text ? JSON.parse(text) : {};
      const o = def(String(b.object ?? ''));
      if (!o) return reply(400, sfErr('INVALIDENTITY', `Entity '${b.object}' is not supported by the Bulk API.`));
      if (!['insert', 'update', 'upsert', 'delete'].includes(b.operation)) return reply(400, sfErr('INVALIDJOB', `Invalid operation: ${b.operation}`));
      if (b.operation === 'upsert' && !b.externalIdFieldName) return reply(400, sfErr('INVALIDJOB', `External ID was blank for ${o.name}. An External ID must be specified for upsert.`));
      if (b.contentType && b.contentType !== 'CSV') return reply(400, sfErr('INVALIDJOB', 'contentType must be CSV'));
      if (b.lineEnding && b.lineEnding !== 'LF') return reply(400, sfErr('INVALIDJOB', 'this fake reads LF line endings only'));
      counters.jobsCreated++;
      const j: BulkJob = { id: `750${(++seq).toString(36).toUpperCase().padStart(12, '0')}`, object: o.name, operation: b.operation, externalIdFieldName: b.externalIdFieldName, state: 'Open', uploads: 0, polls: 0, header: [], successful: [], failed: [], unprocessed: [] };
      sf.jobs.set(j.id, j);
      return reply(200, jobInfo(j, version));
    }
    const m = /^\/jobs\/ingest\/(\w+)(?:\/(batches|successfulResults|failedResults|unprocessedrecords))?$/.exec(path);
    const j = m ? sf.jobs.get(m[1]) : undefined;
    if (!m || !j) return reply(404, sfErr('NOT_FOUND', 'The requested resource does not exist'));
    const sub = m[2];
    if (sub === 'batches' && method === 'PUT') {
      if (!/^text\/csv/.test(contentType)) return reply(400, sfErr('INVALIDJOB', 'Content-Type must be text/csv'));
      if (j.state !== 'Open') return reply(409, sfErr('INVALIDJOBSTATE', `Job ${j.id} is not Open`));
      if (j.uploads > 0) return reply(400, sfErr('INVALIDJOBSTATE', `Found multiple contents for job: <${j.id}>, please 'Close' / 'Abort' / 'Delete' the current Job then create a new Job and make sure you only do 'PUT' once on a given Job.`));
      counters.uploads++;
      j.uploads++;
      j.csv = text;
      return reply(201);
    }
    if (!sub && method === 'PATCH') {
      const b = text ? JSON.parse(text) : {};
      if (b.state === 'UploadComplete') {
        if (j.state !== 'Open') return reply(409, sfErr('INVALIDJOBSTATE', `Job ${j.id} is ${j.state}, not Open`));
        j.state = 'UploadComplete';
      } else if (b.state === 'Aborted') {
        if (['JobComplete', 'Failed', 'Aborted'].includes(j.state)) return reply(409, sfErr('INVALIDJOBSTATE', `Job ${j.id} is already ${j.state}`));
        if (j.csv && j.state !== 'Open') j.unprocessed = (parseCsv(j.csv) ?? []).slice(1);
        if (j.csv) j.header = (parseCsv(j.csv) ?? [[]])[0];
        j.state = 'Aborted';
      } else return reply(400, sfErr('INVALIDJOB', `Invalid state: ${b.state}`));
      return reply(200, jobInfo(j, version));
    }
    if (!sub && method === 'GET') {
      j.polls++;
      sf.onJobPoll?.(j);
      // Jobs advance one step per poll: UploadComplete → InProgress → JobComplete (unless held).
      if (j.state === 'UploadComplete') j.state = 'InProgress';
      else if (j.state === 'InProgress' && !sf.holdBulk) processJob(j);
      return reply(200, jobInfo(j, version));
    }
    if (sub && method === 'GET' && sub !== 'batches') {
      if (!['JobComplete', 'Failed', 'Aborted'].includes(j.state)) return reply(409, sfErr('INVALIDJOBSTATE', `Job ${j.id} is ${j.state}; results are available once it ends`));
      // Results in an order other than the upload's, as the documentation warns.
      if (sub === 'successfulResults') return reply(200, csvOut([['sf__Id', 'sf__Created', ...j.header], ...[...j.successful].reverse()]), 'text/csv');
      if (sub === 'failedResults') return reply(200, csvOut([['sf__Id', 'sf__Error', ...j.header], ...[...j.failed].reverse()]), 'text/csv');
      return reply(200, csvOut([j.header, ...[...j.unprocessed].reverse()]), 'text/csv');
    }
    return reply(405, sfErr('METHOD_NOT_ALLOWED', `HTTP Method '${method}' not allowed`));
  }

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address() as { port: number };
  sf.url = `http://127.0.0.1:${addr.port}`;
  sf.close = () => new Promise<void>((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  });
  return sf;
}
