// A local stand-in for HubSpot's CRM v3 API, following its public reference
// (https://developers.hubspot.com/docs/api-reference, legacy v3 paths):
//   GET  /crm/v3/schemas                                custom object schemas
//   GET  /crm/v3/schemas/{object}                       one schema (requiredProperties)
//   GET  /crm/v3/properties/{object}                    properties: name, type, fieldType, hasUniqueValue, modificationMetadata
//   GET  /crm/v3/objects/{object}?limit=                 list (connection test)
//   POST /crm/v3/objects/{object}/batch/create|update|upsert|read|archive
//   POST /crm/v3/objects/{object}/search                 filterGroups (EQ / IN), properties, limit ≤ 100, after
//   GET  /crm/v3/owners?email=&limit=&after=             owners, paginated
// What it checks, as HubSpot documents:
// - Bearer auth: a private-app token from `tokens`, or an OAuth access token `oauth.isValid()`
//   accepts; otherwise 401 {status:"error", category:"INVALID_AUTHENTICATION" | "EXPIRED_AUTHENTICATION"}.
// - At most 100 inputs per batch request (400 VALIDATION_ERROR otherwise).
// - Unknown properties: 400 with errors[].code PROPERTY_DOESNT_EXIST (whole batch).
// - Invalid values (an e-mail without "@", a number property given a non-number): 400
//   VALIDATION_ERROR "Property values were not valid" for the whole batch, naming the property but
//   no input (as HubSpot does).
// - Contacts' e-mail is unique and compared case-insensitively (stored lower-cased); custom
//   properties with hasUniqueValue are unique. upsert by idProperty creates or updates;
//   update by id or idProperty; create refuses an existing unique value.
// - Multi-status: when every input carries an objectWriteTraceId, a batch answers 207 with
//   `results` (echoing objectWriteTraceId) and `errors` whose context.objectWriteTraceId names the
//   inputs; update of records that do not exist gives an OBJECT_NOT_FOUND error naming them in
//   context.ids. Without trace ids, create with a duplicate answers 409 for the whole batch.
// - batch/archive answers 204 and ignores unknown ids; batch/read with idProperty answers the
//   records found and errors for the others.
// - 429 on demand with HubSpot's body {status, message, errorType:"RATE_LIMIT", policyName} and
//   X-HubSpot-RateLimit-* headers (TEN_SECONDLY_ROLLING or DAILY).
// Not covered: associations, property groups, pipelines/stages validation, the 10,000-result cap
// of search, search's own per-second limit, 423 locks, date/datetime value formats, and
// objectWriteTraceId-less multi-status for update/upsert (HubSpot's exact behaviour there is not
// documented; the fake answers those with unattributed errors, which Backhaul must bisect).
import { createServer, type IncomingMessage, type Server } from 'node:http';

export interface FakeProperty {
  name: string;
  type: 'string' | 'number' | 'bool' | 'date' | 'datetime' | 'enumeration';
  fieldType?: string;
  hasUniqueValue?: boolean;
  readOnly?: boolean;
}

export interface FakeObject {
  properties: FakeProperty[];
  records: Map<string, { id: string; properties: Record<string, string> }>;
  /** Custom objects: schema as GET /crm/v3/schemas answers it. */
  schema?: { name: string; objectTypeId: string; fullyQualifiedName: string; labels: { singular: string; plural: string }; requiredProperties: string[] };
}

export interface FakeHubSpot {
  url: string;
  objects: Map<string, FakeObject>;
  owners: { id: string; email: string; firstName: string; lastName: string; userId: number }[];
  /** Private-app tokens accepted. */
  tokens: Set<string>;
  /** OAuth access tokens, checked with the fake OAuth server. */
  oauth?: { isValid(token: string): boolean };
  /** Requests received, by "METHOD path" (without query). */
  calls: { method: string; path: string; body?: any; auth?: string }[];
  /** Answer the next N requests with 429 of this policy. */
  throttle?: { policy: 'TEN_SECONDLY_ROLLING' | 'DAILY'; remaining: number };
  /** A record whose properties this returns a message for is refused (per input, multi-status). */
  reject?: (object: string, properties: Record<string, string>) => string | undefined;
  /** Writes applied per record id (to see double sends). */
  applied: Map<string, number>;
  /** Answer batch results in reverse input order (HubSpot does not promise any order). */
  reverseResults: boolean;
  close(): Promise<void>;
}

const STANDARD: Record<string, FakeProperty[]> = {
  contacts: [
    { name: 'email', type: 'string', fieldType: 'text' },
    { name: 'firstname', type: 'string', fieldType: 'text' },
    { name: 'lastname', type: 'string', fieldType: 'text' },
    { name: 'hubspot_owner_id', type: 'enumeration', fieldType: 'select' },
    { name: 'lifecyclestage', type: 'enumeration', fieldType: 'radio' },
    { name: 'num_employees', type: 'number', fieldType: 'number' },
    { name: 'hs_object_id', type: 'number', fieldType: 'number', readOnly: true },
    { name: 'createdate', type: 'datetime', fieldType: 'date', readOnly: true },
  ],
  companies: [
    { name: 'name', type: 'string', fieldType: 'text' },
    { name: 'domain', type: 'string', fieldType: 'text' },
    { name: 'hs_object_id', type: 'number', fieldType: 'number', readOnly: true },
  ],
  deals: [
    { name: 'dealname', type: 'string', fieldType: 'text' },
    { name: 'amount', type: 'number', fieldType: 'number' },
    { name: 'hs_object_id', type: 'number', fieldType: 'number', readOnly: true },
  ],
  tickets: [
    { name: 'subject', type: 'string', fieldType: 'text' },
    { name: 'hs_pipeline_stage', type: 'enumeration', fieldType: 'select' },
    { name: 'hs_object_id', type: 'number', fieldType: 'number', readOnly: true },
  ],
};

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

const now = () => new Date().toISOString();

export async function startFakeHubSpot(opts: { tokens?: string[]; customObjects?: { name: string; properties: FakeProperty[]; requiredProperties?: string[] }[] } = {}): Promise<FakeHubSpot> {
  let nextId = 1000;
  const objects = new Map<string, FakeObject>();
  for (const [name, properties] of Object.entries(STANDARD)) objects.set(name, { properties, records: new Map() });
  for (const c of opts.customObjects ?? []) {
    const fqn = `p12345_${c.name}`;
    objects.set(fqn, {
      properties: [...c.properties, { name: 'hs_object_id', type: 'number', readOnly: true }],
      records: new Map(),
      schema: { name: c.name, objectTypeId: `2-${++nextId}`, fullyQualifiedName: fqn, labels: { singular: c.name, plural: `${c.name}s` }, requiredProperties: c.requiredProperties ?? [] },
    });
  }
  const hs: FakeHubSpot = {
    url: '',
    objects,
    owners: [],
    tokens: new Set(opts.tokens ?? []),
    calls: [],
    applied: new Map(),
    reverseResults: false,
    close: async () => {},
  };

  const uniqueProps = (o: string, obj: FakeObject) => obj.properties.filter((p) => p.hasUniqueValue || (o === 'contacts' && p.name === 'email')).map((p) => p.name);
  const norm = (o: string, prop: string, v: string) => (o === 'contacts' && prop === 'email' ? v.trim().toLowerCase() : v);
  // Unique-property indexes (object → property → normalised value → record id), kept by `apply`.
  const indexes = new Map<string, Map<string, Map<string, string>>>();
  const indexOf = (o: string, prop: string) => {
    let byProp = indexes.get(o);
    if (!byProp) indexes.set(o, (byProp = new Map()));
    let idx = byProp.get(prop);
    if (!idx) byProp.set(prop, (idx = new Map()));
    return idx;
  };
  const findBy = (o: string, obj: FakeObject, prop: string, v: string) => {
    if (prop === 'hs_object_id') return obj.records.get(v);
    if (uniqueProps(o, obj).includes(prop)) {
      const id = indexOf(o, prop).get(norm(o, prop, v));
      const r = id === undefined ? undefined : obj.records.get(id);
      return r && r.properties[prop] !== undefined && norm(o, prop, r.properties[prop]) === norm(o, prop, v) ? r : undefined;
    }
    for (const r of obj.records.values()) if (r.properties[prop] !== undefined && norm(o, prop, r.properties[prop]) === norm(o, prop, v)) return r;
    return undefined;
  };
  const invalidValues = (obj: FakeObject, props: Record<string, string>): string[] => {
    const bad: string[] = [];
    for (const [k, v] of Object.entries(props)) {
      const p = obj.properties.find((x) => x.name === k);
      if (!p || v === '') continue;
      if (k === 'email' && !v.includes('@')) bad.push(`{"isValid":false,"message":"Email address ${v} is invalid","error":"INVALID_EMAIL","name":"email"}`);
      if (p.type === 'number' && !/^-?\d+(\.\d+)?$/.test(v)) bad.push(`{"isValid":false,"message":"${v} was not a valid number.","error":"INVALID_INTEGER","name":"${k}"}`);
    }
    return bad;
  };
  const apply = (o: string, obj: FakeObject, id: string | undefined, props: Record<string, string>) => {
    let rec = id ? obj.records.get(id) : undefined;
    if (!rec) {
      rec = { id: String(++nextId), properties: { hs_object_id: '' } };
      rec.properties.hs_object_id = rec.id;
      obj.records.set(rec.id, rec);
    }
    for (const [k, v] of Object.entries(props)) rec.properties[k] = norm(o, k, v);
    for (const u of uniqueProps(o, obj)) if (rec.properties[u]) indexOf(o, u).set(norm(o, u, rec.properties[u]), rec.id);
    hs.applied.set(rec.id, (hs.applied.get(rec.id) ?? 0) + 1);
    return rec;
  };
  const view = (r: { id: string; properties: Record<string, string> }, traceId?: string, isNew?: boolean) => ({
    id: r.id,
    properties: { ...r.properties },
    createdAt: now(),
    updatedAt: now(),
    archived: false,
    ...(isNew !== undefined ? { new: isNew } : {}),
    ...(traceId !== undefined ? { objectWriteTraceId: traceId } : {}),
  });

  const server: Server = createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const text = await readBody(req);
    let body: any;
    try {
      body = text ? JSON.parse(text) : undefined;
    } catch {
      body = undefined;
    }
    const send = (status: number, payload?: unknown, headers: Record<string, string> = {}) => {
      res.writeHead(status, { ...(payload !== undefined ? { 'content-type': 'application/json;charset=utf-8' } : {}), ...headers });
      res.end(payload === undefined ? undefined : JSON.stringify(payload));
    };
    const error = (status: number, category: string, message: string, extra: Record<string, unknown> = {}) =>
      send(status, { status: 'error', message, correlationId: `corr-${hs.calls.length}`, category, ...extra });
    hs.calls.push({ method: req.method ?? '', path: url.pathname, body, auth: req.headers.authorization });

    const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    if (!token) return error(401, 'INVALID_AUTHENTICATION', 'Authentication credentials not found.');
    if (!hs.tokens.has(token) && !hs.oauth?.isValid(token)) {
      return error(401, token.startsWith('at-') ? 'EXPIRED_AUTHENTICATION' : 'INVALID_AUTHENTICATION', 'The OAuth token used to make this call expired or is not valid.');
    }
    if (hs.throttle && hs.throttle.remaining > 0) {
      hs.throttle.remaining--;
      const daily = hs.throttle.policy === 'DAILY';
      return send(
        429,
        { status: 'error', message: daily ? 'You have reached your daily limit.' : 'You have reached your ten_secondly_rolling limit.', errorType: 'RATE_LIMIT', correlationId: 'corr-429', policyName: hs.throttle.policy, requestId: 'req-429' },
        daily ? { 'x-hubspot-ratelimit-daily': '250000', 'x-hubspot-ratelimit-daily-remaining': '0' } : { 'x-hubspot-ratelimit-max': '100', 'x-hubspot-ratelimit-remaining': '0', 'x-hubspot-ratelimit-interval-milliseconds': '10000' },
      );
    }

    if (req.method === 'GET' && url.pathname === '/crm/v3/schemas') {
      return send(200, { results: [...objects.values()].filter((o) => o.schema).map((o) => o.schema) });
    }
    let m = /^\/crm\/v3\/schemas\/([^/]+)$/.exec(url.pathname);
    if (req.method === 'GET' && m) {
      const o = objects.get(m[1]);
      return o?.schema ? send(200, o.schema) : error(404, 'OBJECT_NOT_FOUND', `Unable to infer object type from: ${m[1]}`);
    }
    m = /^\/crm\/v3\/properties\/([^/]+)$/.exec(url.pathname);
    if (req.method === 'GET' && m) {
      const o = objects.get(m[1]);
      if (!o) return error(400, 'VALIDATION_ERROR', `Unable to infer object type from: ${m[1]}`);
      return send(200, {
        results: o.properties.map((p) => ({
          name: p.name,
          label: p.name,
          type: p.type,
          fieldType: p.fieldType ?? 'text',
          hasUniqueValue: p.hasUniqueValue ?? false,
          calculated: false,
          modificationMetadata: { archivable: true, readOnlyDefinition: false, readOnlyValue: p.readOnly ?? false },
        })),
      });
    }
    if (req.method === 'GET' && url.pathname === '/crm/v3/owners') {
      const limit = Math.min(Number(url.searchParams.get('limit') ?? 100), 500);
      const start = Number(url.searchParams.get('after') ?? 0);
      const email = url.searchParams.get('email');
      const all = email ? hs.owners.filter((o) => o.email.toLowerCase() === email.toLowerCase()) : hs.owners;
      const page = all.slice(start, start + limit);
      return send(200, { results: page.map((o) => ({ ...o, archived: false, createdAt: now(), updatedAt: now() })), ...(start + limit < all.length ? { paging: { next: { after: String(start + limit) } } } : {}) });
    }
    m = /^\/crm\/v3\/objects\/([^/]+)(?:\/(batch\/(?:create|update|upsert|read|archive)|search))?$/.exec(url.pathname);
    if (!m) return error(404, 'OBJECT_NOT_FOUND', 'Not found');
    const o = m[1];
    const obj = objects.get(o);
    if (!obj) return error(404, 'OBJECT_NOT_FOUND', `Unable to infer object type from: ${o}`);
    const action = m[2];
    if (req.method === 'GET' && !action) return send(200, { results: [...obj.records.values()].slice(0, 10).map((r) => view(r)) });
    if (req.method !== 'POST' || !action) return error(405, 'METHOD_NOT_ALLOWED', 'Method not allowed');

    if (action === 'search') {
      const f = body?.filterGroups?.[0]?.filters?.[0];
      const limit = Math.min(Number(body?.limit ?? 10), 100);
      const values: string[] = f?.operator === 'IN' ? f.values : [f?.value];
      const hits = [...obj.records.values()].filter((r) => r.properties[f.propertyName] !== undefined && values.some((v) => String(r.properties[f.propertyName]).toLowerCase() === String(v).toLowerCase()));
      const start = Number(body?.after ?? 0);
      const page = hits.slice(start, start + limit);
      const props: string[] = body?.properties ?? ['hs_object_id'];
      return send(200, {
        total: hits.length,
        results: page.map((r) => ({ id: r.id, properties: Object.fromEntries(props.map((p) => [p, r.properties[p] ?? null])), createdAt: now(), updatedAt: now(), archived: false })),
        ...(start + limit < hits.length ? { paging: { next: { after: String(start + limit) } } } : {}),
      });
    }

    const inputs: any[] = body?.inputs ?? [];
    if (!Array.isArray(inputs) || inputs.length === 0) return error(400, 'VALIDATION_ERROR', 'inputs must not be empty');
    if (inputs.length > 100) return error(400, 'VALIDATION_ERROR', `Batch input of ${inputs.length} inputs exceeds the limit of 100.`);
    const kind = action.slice('batch/'.length);

    if (kind === 'archive') {
      for (const i of inputs) {
        if (obj.records.delete(String(i.id))) hs.applied.set(String(i.id), (hs.applied.get(String(i.id)) ?? 0) + 1);
      }
      return send(204);
    }
    if (kind === 'read') {
      const prop = body.idProperty ?? 'hs_object_id';
      const results: unknown[] = [];
      const missing: string[] = [];
      for (const i of inputs) {
        const r = findBy(o, obj, prop, String(i.id));
        if (r) results.push(view(r));
        else missing.push(String(i.id));
      }
      return send(missing.length ? 207 : 200, {
        status: 'COMPLETE',
        results,
        ...(missing.length ? { numErrors: 1, errors: [{ status: 'error', category: 'OBJECT_NOT_FOUND', message: 'Could not get some objects, they may be deleted or not exist.', context: { ids: missing } }] } : {}),
        startedAt: now(),
        completedAt: now(),
      });
    }

    // Whole-batch validation first, as HubSpot does: nothing is written when it fails.
    const known = new Set(obj.properties.filter((p) => !p.readOnly).map((p) => p.name));
    const unknown = [...new Set(inputs.flatMap((i) => Object.keys(i.properties ?? {}).filter((k) => !known.has(k))))];
    if (unknown.length) {
      return error(400, 'VALIDATION_ERROR', `Property values were not valid: ${unknown.map((k) => `Property "${k}" does not exist`).join(', ')}`, {
        errors: unknown.map((k) => ({ message: `Property "${k}" does not exist`, code: 'PROPERTY_DOESNT_EXIST', context: { propertyName: [k] } })),
      });
    }
    const invalid = inputs.flatMap((i) => invalidValues(obj, i.properties ?? {}));
    if (invalid.length) return error(400, 'VALIDATION_ERROR', `Property values were not valid: [${invalid.join(',')}]`);
    const multiStatus = inputs.every((i) => typeof i.objectWriteTraceId === 'string');
    const unique = uniqueProps(o, obj);

    // Plan every input against the current records, then apply (atomically when not multi-status).
    type Plan = { input: any; target?: { id: string }; error?: { category: string; message: string; context: Record<string, string[]> } };
    const plans: Plan[] = inputs.map((i) => {
      const trace: Record<string, string[]> = multiStatus ? { objectWriteTraceId: [i.objectWriteTraceId] } : {};
      const props: Record<string, string> = i.properties ?? {};
      const refusal = hs.reject?.(o, props);
      if (refusal) return { input: i, error: { category: 'VALIDATION_ERROR', message: refusal, context: { ...trace } } };
      if (kind === 'create') {
        for (const u of unique) {
          const v = props[u];
          const existing = v ? findBy(o, obj, u, v) : undefined;
          if (existing) return { input: i, error: { category: 'CONFLICT', message: `A record already exists with ${u} ${v}. Existing ID: ${existing.id}`, context: { ...trace } } };
        }
        return { input: i };
      }
      const prop = i.idProperty ?? 'hs_object_id';
      if (i.idProperty && !unique.includes(i.idProperty)) {
        return { input: i, error: { category: 'VALIDATION_ERROR', message: `Property ${i.idProperty} is not a unique identifier.`, context: { ...trace } } };
      }
      const target = findBy(o, obj, prop, String(i.id));
      if (kind === 'update' && !target) return { input: i, error: { category: 'OBJECT_NOT_FOUND', message: `Could not get some ${o} objects, they may be deleted or not exist.`, context: { ids: [String(i.id)] } } };
      return { input: i, target };
    });
    const failed = plans.filter((p) => p.error);
    if (failed.length && !multiStatus) {
      const first = failed[0].error!;
      return error(first.category === 'CONFLICT' ? 409 : 400, first.category, first.message, { context: first.context });
    }
    const results: unknown[] = [];
    for (const p of plans) {
      if (p.error) continue;
      const i = p.input;
      const props: Record<string, string> = { ...(i.properties ?? {}) };
      if (kind === 'upsert' && !p.target && i.idProperty) props[i.idProperty] = String(i.id);
      const rec = apply(o, obj, p.target?.id, props);
      results.push(view(rec, i.objectWriteTraceId, kind === 'upsert' ? !p.target : undefined));
    }
    if (hs.reverseResults) results.reverse();
    const errors = failed.map((p) => ({ status: 'error', ...p.error! }));
    return send(errors.length ? 207 : kind === 'create' ? 201 : 200, {
      status: 'COMPLETE',
      results,
      ...(errors.length ? { numErrors: errors.length, errors } : {}),
      startedAt: now(),
      completedAt: now(),
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  hs.url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  hs.close = () => new Promise((r) => server.close(() => r()));
  return hs;
}
