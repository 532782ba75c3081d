import t from 'tap';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { graph, ok } from '../helpers/http-fixtures.ts';
import { PROBLEM_CODES } from '../../src/http/problem-codes.ts';
import { PHASES } from '../../src/engine/status.ts';
import { EVENT_TYPES } from '../../src/domain/webhooks.ts';

// What client generators and readers need from the OpenAPI document (issue 16, items 5 and 6),
// checked against the document the server serves and, where it states behaviour (defaults,
// headers), against what the server does.

type Json = Record<string, any>;
const METHODS = ['get', 'post', 'put', 'patch', 'delete'];

t.test('the OpenAPI contract', async (t) => {
  const h = await startTestBackhaul(t);
  const doc: Json = (await h.request('GET', '/openapi.json', { token: null })).body;
  const schemas = doc.components.schemas as Json;
  const ops: { path: string; method: string; op: Json }[] = [];
  for (const [path, item] of Object.entries(doc.paths as Json)) for (const m of METHODS) if ((item as Json)[m]) ops.push({ path, method: m, op: (item as Json)[m] });

  t.test('operations: stable camelCase operationIds, descriptions, real response descriptions', async (t) => {
    t.ok(ops.length >= 68);
    const ids = ops.map((o) => o.op.operationId);
    t.same(ids.filter((id) => typeof id !== 'string' || !/^[a-z][a-zA-Z0-9]*$/.test(id)), [], 'every operation has a camelCase operationId');
    t.equal(new Set(ids).size, ids.length, 'unique');
    for (const [id, where] of [
      ['listSyncs', 'get /v1/syncs'],
      ['replaceSync', 'put /v1/syncs/{ref}'],
      ['replaceMappings', 'put /v1/syncs/{ref}/mappings'],
      ['triggerRun', 'post /v1/syncs/{ref}/runs'],
      ['getHealth', 'get /healthz'],
    ]) {
      const [m, p] = where.split(' ');
      t.equal(doc.paths[p]?.[m]?.operationId, id, `${where} is ${id}`);
    }
    for (const { path, method, op } of ops) {
      t.ok(op.description, `${method} ${path} has a description`);
      for (const [status, r] of Object.entries(op.responses as Json)) {
        t.ok((r as Json).description && (r as Json).description !== 'Default Response', `${method} ${path} ${status}: ${(r as Json).description}`);
      }
    }
    t.ok(doc.servers?.length, 'servers');
    t.match(doc.servers[0], { url: 'http://{host}:{port}', variables: { host: { default: '127.0.0.1' }, port: { default: '3000' } } });
    const tags = new Set((doc.tags as Json[]).map((x) => x.name));
    t.same(ops.flatMap((o) => o.op.tags).filter((x: string) => !tags.has(x)), [], 'every tag is declared');
  });

  t.test('health and metrics bodies are declared', async (t) => {
    t.match(doc.paths['/healthz'].get.responses['200'].content['application/json'].schema, { properties: { status: { enum: ['ok'] } } });
    t.match(doc.paths['/readyz'].get.responses['503'].content['application/json'].schema, { properties: { status: {}, checks: {} } });
    t.ok(doc.paths['/metrics'].get.responses['200'].content['text/plain; version=0.0.4; charset=utf-8'], 'metrics: the Prometheus text format');
  });

  t.test('response headers are documented, and sent', async (t) => {
    const headerOf = (p: string, m: string, s: string) => Object.keys(doc.paths[p][m].responses[s].headers ?? {});
    t.same(headerOf('/v1/syncs/{ref}', 'get', '200'), ['ETag']);
    t.same(headerOf('/v1/syncs', 'post', '201').sort(), ['ETag', 'Idempotent-Replayed', 'Location']);
    t.same(headerOf('/v1/syncs/{ref}/mappings', 'put', '200'), ['ETag']);
    t.same(headerOf('/v1/syncs/{ref}/runs', 'post', '200').sort(), ['Backhaul-Existing-Run', 'Idempotent-Replayed', 'Location']);
    t.same(headerOf('/v1/syncs/{ref}/runs', 'post', '202').sort(), ['Idempotent-Replayed', 'Location']);

    // What is documented is sent: every ETag/Location the document promises for these answers.
    const g = await graph(h, 'oc');
    const checks: [string, string, unknown, string, string][] = [
      ['GET', `/v1/syncs/${g.sync.id}`, undefined, '/v1/syncs/{ref}', 'get'],
      ['PATCH', `/v1/syncs/${g.sync.id}`, { name: 'Renamed' }, '/v1/syncs/{ref}', 'patch'],
      ['PUT', `/v1/syncs/${g.sync.id}/mappings`, [{ destinationField: 'email', source: { column: 'email' } }], '/v1/syncs/{ref}/mappings', 'put'],
      ['POST', `/v1/syncs/${g.sync.id}/mappings`, { destinationField: 'firstname', source: { column: 'first_name' } }, '/v1/syncs/{ref}/mappings', 'post'],
      ['POST', `/v1/syncs/${g.sync.id}/runs`, {}, '/v1/syncs/{ref}/runs', 'post'],
      ['POST', `/v1/syncs/${g.sync.id}/runs`, {}, '/v1/syncs/{ref}/runs', 'post'],
      ['GET', `/v1/models/${g.model.id}`, undefined, '/v1/models/{ref}', 'get'],
      ['GET', `/v1/connections/${g.src.id}`, undefined, '/v1/connections/{ref}', 'get'],
    ];
    for (const [method, path, body, p, m] of checks) {
      const r = await h.request(method, path, { body });
      const declared = doc.paths[p][m].responses[String(r.status)];
      t.ok(declared, `${method} ${path} answered a documented status (${r.status})`);
      for (const name of Object.keys(declared?.headers ?? {})) {
        if (name === 'Idempotent-Replayed') continue; // only on a replay
        t.ok(r.headers.get(name), `${method} ${path} ${r.status} sends ${name}`);
      }
    }
  });

  t.test('defaults the server fills in are declared, and are what it fills in', async (t) => {
    const create = schemas.SyncCreate.properties;
    t.same(create.enabled.default, true);
    t.same(create.schedule.default, { type: 'manual' });
    const cron = (create.schedule.anyOf ?? create.schedule.oneOf).find((s: Json) => s.properties.type.enum?.[0] === 'cron' || s.properties.type.const === 'cron');
    t.equal(cron.properties.timezone.default, 'UTC');
    const g = await graph(h, 'od');
    const sync = await ok(h.request('GET', `/v1/syncs/${g.sync.id}`), 200);
    for (const group of ['delivery', 'alerts']) {
      for (const [k, p] of Object.entries(create[group].properties as Json)) {
        t.ok('default' in (p as Json), `${group}.${k} declares its default`);
        t.same(sync[group][k], (p as Json).default, `${group}.${k}: the server fills in the declared default`);
      }
      t.same(create[group].default, sync[group]);
    }
    t.same(sync.enabled, create.enabled.default);
    t.same(sync.schedule, create.schedule.default);
    const cronSync = await ok(h.request('PATCH', `/v1/syncs/${g.sync.id}`, { body: { schedule: { type: 'cron', expression: '0 6 * * *' } } }), 200);
    t.equal(cronSync.schedule.timezone, cron.properties.timezone.default);
    t.notOk(JSON.stringify(schemas.SyncPatch).includes('"default"'), 'a PATCH claims no default: it keeps what it does not send');
    t.equal(schemas.RunTrigger.properties.fullResync.default, false);

    // Connection configs: per connector type, with their defaults; the server fills them in.
    const conn = await ok(h.request('GET', `/v1/connections/${g.src.id}`), 200);
    const pgConfig = schemas.PostgresConnectionConfig.properties;
    for (const [k, p] of Object.entries(pgConfig as Json)) if ('default' in (p as Json)) t.same(conn.config[k], (p as Json).default, `postgres config.${k} default`);
  });

  t.test('connections are typed per connector type', async (t) => {
    const types = (await ok(h.request('GET', '/v1/connectors'), 200)).data.map((c: { type: string }) => c.type);
    for (const base of ['ConnectionCreate', 'ConnectionPut', 'Connection']) {
      const s = schemas[base];
      t.equal(s.discriminator?.propertyName, 'type', `${base}: discriminated by type`);
      t.same(Object.keys(s.discriminator.mapping).sort(), [...types].sort(), `${base}: one branch per connector type`);
      for (const [type, ref] of Object.entries(s.discriminator.mapping as Record<string, string>)) {
        const branch = schemas[ref.split('/').pop()!];
        t.same(branch.properties.type.const ?? branch.properties.type.enum?.[0], type);
        t.match(branch.properties.config.$ref, /ConnectionConfig$/, `${base}/${type}: config typed`);
        t.notOk(JSON.stringify(branch.properties.config).includes('"additionalProperties":true'));
      }
    }
  });

  t.test('enums are enums', async (t) => {
    t.same(schemas.RunRecord.properties.operation.enum, ['insert', 'update', 'delete', 'none']);
    t.same(schemas.Run.properties.phase.enum, [...PHASES, null]);
    t.same(schemas.Run.properties.status.enum, ['queued', 'running', 'succeeded', 'partially_succeeded', 'failed', 'cancelled']);
    t.same(schemas.Sync.properties.mode.enum, ['insert', 'update', 'upsert', 'mirror']);
    t.same(schemas.WebhookEndpoint.properties.events.items.enum, [...EVENT_TYPES]);
    t.same(schemas.WebhookDelivery.properties.eventType.enum, [...EVENT_TYPES]);
    t.same(schemas.Problem.properties.code, { $ref: '#/components/schemas/ProblemCode' });
    t.same(schemas.ProblemCode.enum, [...PROBLEM_CODES]);
    t.notOk(JSON.stringify(doc).match(/"anyOf":\[(\{"type":"string","enum":\["[^"]*"\]\},?)+\]/), 'no union of single constants is left');
  });
});
