import { listConnectorTypes } from '../connectors/registry.ts';

// The finishing touches of the OpenAPI document that no single route knows (issue 16, items 5
// and 6): servers, tag descriptions, a description for every operation and response, the response
// headers the API sends (ETag, Location, Idempotent-Replayed, Backhaul-Existing-Run), and
// connections typed per connector type (a oneOf discriminated by `type`, each branch with its
// config's JSON Schema, defaults included). @fastify/swagger calls finishOpenapi (transformObject)
// on the document it builds from the routes; scripts/generate.ts writes the result to
// openapi/openapi.json, and CI lints it (npm run lint:openapi).

type Json = Record<string, any>;

export const OPENAPI_SERVERS = [
  {
    url: 'http://{host}:{port}',
    description: 'A Backhaul server: HOST and PORT of its environment (127.0.0.1:3000 by default); put a TLS proxy in front for https.',
    variables: { host: { default: '127.0.0.1', description: 'HOST' }, port: { default: '3000', description: 'PORT' } },
  },
];

export const OPENAPI_TAGS = [
  { name: 'connections', description: 'Configured connector instances: sources (databases read by models) and destinations (where syncs write). Secrets are write-only.' },
  { name: 'models', description: 'SQL queries on a source connection, with the column that identifies a row.' },
  { name: 'syncs', description: 'Model → destination object: mode, match key, schedule, delivery settings and alert rules.' },
  { name: 'mappings', description: "A sync's destination fields and where their values come from. Part of the sync's configuration: a change bumps the sync's version." },
  { name: 'runs', description: 'Executions of a sync, with their phases, counts and the outcome of every row.' },
  { name: 'sequences', description: 'Syncs run one after another, on their own schedule or trigger, stopping or continuing on failure; and their runs.' },
  { name: 'webhooks', description: 'Standard Webhooks subscriptions to run and alert events, their deliveries, and the secret signing callbackUrl deliveries.' },
  { name: 'alerts', description: "Alert channels (Slack, PagerDuty, webhook) and the alerts raised by syncs' rules." },
  { name: 'declarative', description: 'Configuration as code: export a workspace as a bundle, plan a bundle against it, apply it (one transaction, If-Match on every write).' },
  { name: 'connectors', description: 'The catalog of connector types: roles, config JSON Schemas, secrets and capabilities.' },
  { name: 'workspaces', description: 'Tenants. Owner keys create and list them.' },
  { name: 'api-keys', description: 'Bearer keys of a workspace (admin scope). Tokens are shown once.' },
  { name: 'audit', description: 'Who changed what, when, from which key (field names only, never values).' },
  { name: 'health', description: 'Liveness, readiness and Prometheus metrics; public unless configured otherwise.' },
];

const HEADERS = {
  etag: {
    description: 'The version of the resource returned, quoted (e.g. `"3"`): send it back in If-Match to make a write conditional.',
    schema: { type: 'string', pattern: '^"[0-9]+"$' },
  },
  location: { description: 'The URL of the resource created (or of the run started).', schema: { type: 'string' } },
  replayed: {
    description: 'Present, `true`, when this answer is the stored first response to the same Idempotency-Key and body (the request was not executed again).',
    schema: { type: 'string', enum: ['true'] },
  },
  existingRun: {
    description: 'Present, `true`, when the sync already had a queued run and that run is returned (status 200); a new run answers 202 without it.',
    schema: { type: 'string', enum: ['true'] },
  },
};

/** The operations whose 200/201 answers carry an ETag (a versioned resource, or the sync's version for the mapping set). */
const ETAG_OPS = new Set([
  ...['Connection', 'Model', 'Sync', 'WebhookEndpoint', 'AlertChannel'].flatMap((n) => [`get${n}`, `create${n}`, `update${n}`, `replace${n}`]),
  'getMapping',
  'createMapping',
  'updateMapping',
  'replaceMapping',
  'replaceMappings',
]);
/** The operations whose 201/202 answers carry a Location. */
const LOCATION_OPS = new Set([
  ...['Connection', 'Model', 'Sync', 'WebhookEndpoint', 'AlertChannel'].flatMap((n) => [`create${n}`, `replace${n}`]),
  'createMapping',
  'triggerRun',
  'redeliverWebhookDelivery',
]);

/** Answers whose body is not one named resource or a page of them: said in so many words. */
const RESPONSE_DESCRIPTIONS: Record<string, string> = {
  'createWorkspace 201': 'Created: the workspace and its first admin key, whose token is shown this once.',
  'createApiKey 201': 'Created: the key, with its token shown this once.',
  'listConnectors 200': 'The connector types.',
  'listAuditEvents 200': 'A page of audit events, newest first, and nextCursor to fetch the next one (null on the last page).',
  'testConnection 200': 'The outcome of the test: ok and the latency, or ok false and the error (the test itself ran).',
  'testAlertChannel 200': 'The outcome of the test: ok and the latency, or ok false and the error (the test itself ran).',
  'listConnectionObjects 200': "The destination's objects.",
  'listObjectFields 200': "The object's fields.",
  'previewModel 200': "The query's columns and first rows.",
  'listModelColumns 200': "The columns of the query's result.",
  'suggestMappings 200': 'The suggestions, and the mappings added (with apply).',
  'replaceMappings 200': "The whole set after the write, and the sync's version (also the ETag).",
  'getCallbackSecret 200': 'Whether the secret is set, and when it was rotated.',
  'rotateCallbackSecret 200': 'The new secret, shown this once.',
  'rotateWebhookSecret 200': 'The endpoint, with its new secret shown this once.',
};

const words = (name: string) => name.replace(/([a-z])([A-Z])/g, '$1 $2').toLowerCase();
const plural = (noun: string) => (noun.endsWith('y') && !noun.endsWith('key') ? `${noun.slice(0, -1)}ies` : `${noun}s`);

function refName(schema: Json | undefined): string | undefined {
  const ref = schema?.$ref as string | undefined;
  return ref?.startsWith('#/components/schemas/') ? ref.slice('#/components/schemas/'.length) : undefined;
}

/** A real description for a response @fastify/swagger left as "Default Response". */
function describeResponse(method: string, status: string, op: Json, response: Json): string {
  const schema = response.content?.['application/json']?.schema as Json | undefined;
  const name = refName(schema);
  const noun = name ? words(name) : undefined;
  if (status === '204') return method === 'delete' ? 'Deleted: no content.' : 'Done: no content.';
  const items = schema?.properties?.data?.items as Json | undefined;
  const itemNoun = refName(items) ? words(refName(items)!) : undefined;
  if (itemNoun && schema?.properties?.nextCursor) return `A page of ${plural(itemNoun)}, and nextCursor to fetch the next one (null on the last page).`;
  if (itemNoun) return `The ${plural(itemNoun)}.`;
  if (noun) {
    if (status === '201') return method === 'put' ? `Created (the slug did not exist): the ${noun}.` : `Created: the ${noun}.`;
    if (status === '202') return `Accepted: the ${noun}.`;
    if (method === 'put') return `Replaced (unchanged when nothing differs): the ${noun}.`;
    if (method === 'patch') return `Updated (unchanged when nothing differs): the ${noun}.`;
    return `The ${noun}.`;
  }
  return `${String(op.summary ?? 'Success').replace(/\.$/, '')}.`;
}

/** Connections typed per connector type: a oneOf of one branch per type, discriminated by `type`. */
function typeConnections(doc: Json): void {
  const schemas = doc.components.schemas as Json;
  const types = listConnectorTypes();
  const pascal = (t: string) => t.replace(/(^|[-_])([a-z])/g, (_m, _s, c: string) => c.toUpperCase());
  for (const t of types) {
    schemas[`${pascal(t.type)}ConnectionConfig`] = {
      ...JSON.parse(JSON.stringify(t.configSchema)),
      description: `The config of a ${t.label} connection. Defaults are filled in by the server and shown in answers.`,
    };
  }
  for (const base of ['ConnectionCreate', 'ConnectionPut', 'Connection']) {
    const generic = schemas[base] as Json | undefined;
    if (!generic?.properties?.type || !generic.properties.config) continue;
    const mapping: Record<string, string> = {};
    for (const t of types) {
      const name = `${pascal(t.type)}${base}`;
      const branch = JSON.parse(JSON.stringify(generic)) as Json;
      delete branch.$id;
      branch.title = name;
      branch.description = `${generic.description ? `${generic.description} ` : ''}A ${t.label} connection.`.trim();
      branch.properties.type = { type: 'string', const: t.type, description: 'The connector type (the discriminator)' };
      branch.properties.config = { $ref: `#/components/schemas/${pascal(t.type)}ConnectionConfig` };
      if (branch.properties.secrets) {
        const value = generic.properties.secrets.additionalProperties ?? {};
        branch.properties.secrets = {
          type: 'object',
          additionalProperties: false,
          description: generic.properties.secrets.description ?? `Write-only secrets of a ${t.label} connection`,
          properties: Object.fromEntries(t.secrets.map((s) => [s.name, { ...value, description: `${s.description}${s.required ? ' (required)' : ''}` }])),
        };
      }
      schemas[name] = branch;
      mapping[t.type] = `#/components/schemas/${name}`;
    }
    schemas[base] = {
      description: `${generic.description ? `${generic.description} ` : ''}One shape per connector type, chosen by \`type\` (see GET /v1/connectors).`.trim(),
      oneOf: Object.values(mapping).map(($ref) => ({ $ref })),
      discriminator: { propertyName: 'type', mapping },
    };
  }
}

/**
 * A union of constants (TypeBox's Literal unions: statuses, modes, triggers…) becomes a plain
 * `enum`, which every client generator turns into an enum type; `anyOf` of `const` is not.
 */
function constUnionsToEnums(v: unknown): void {
  if (Array.isArray(v)) {
    v.forEach(constUnionsToEnums);
    return;
  }
  if (!v || typeof v !== 'object') return;
  const o = v as Json;
  const members = o.anyOf as Json[] | undefined;
  // @fastify/swagger writes a `const` as a one-value `enum`.
  const single = (m: Json) => ('const' in m ? [m.const] : Array.isArray(m.enum) && m.enum.length === 1 ? m.enum : undefined);
  const plain = (m: Json) => Object.keys(m).every((k) => k === 'const' || k === 'enum' || k === 'type');
  if (Array.isArray(members) && members.length > 1 && members.every((m) => m && single(m) && plain(m))) {
    const types = [...new Set(members.map((m) => m.type ?? typeof single(m)![0]))];
    delete o.anyOf;
    if (types.length === 1) o.type = types[0];
    o.enum = members.map((m) => single(m)![0]);
  }
  for (const x of Object.values(o)) constUnionsToEnums(x);
}

/** @fastify/swagger transformObject: the document with the additions described above. */
export function finishOpenapi({ openapiObject }: { openapiObject: Json }): Json {
  const doc = JSON.parse(JSON.stringify(openapiObject)) as Json;
  doc.servers = OPENAPI_SERVERS;
  doc.tags = OPENAPI_TAGS;
  doc.info = {
    ...doc.info,
    license: { name: 'MIT', identifier: 'MIT' },
    contact: { name: 'Backhaul maintainers' },
  };
  for (const [, item] of Object.entries(doc.paths as Json)) {
    for (const [method, op] of Object.entries(item as Json)) {
      if (!['get', 'post', 'put', 'patch', 'delete'].includes(method)) continue;
      op.description ??= op.summary;
      const replayable = (op.parameters as Json[] | undefined)?.some((p) => p.in === 'header' && p.name === 'idempotency-key');
      for (const [status, response] of Object.entries(op.responses as Json)) {
        const r = response as Json;
        const said = RESPONSE_DESCRIPTIONS[`${op.operationId} ${status}`];
        if (said) r.description = said;
        else if (r.description === 'Default Response') r.description = describeResponse(method, status, op, r);
        if (!/^2/.test(status)) continue;
        const headers: Json = { ...(r.headers ?? {}) };
        if (ETAG_OPS.has(op.operationId) && (status === '200' || status === '201')) headers.ETag = HEADERS.etag;
        if (LOCATION_OPS.has(op.operationId) && (status === '201' || status === '202' || (op.operationId === 'triggerRun' && status === '200'))) headers.Location = HEADERS.location;
        if (op.operationId === 'triggerRun' && status === '200') headers['Backhaul-Existing-Run'] = HEADERS.existingRun;
        if (replayable && method === 'post') headers['Idempotent-Replayed'] = HEADERS.replayed;
        if (Object.keys(headers).length) r.headers = headers;
      }
    }
  }
  typeConnections(doc);
  constUnionsToEnums(doc.components);
  constUnionsToEnums(doc.paths);
  return doc;
}
