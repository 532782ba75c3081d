import { readFileSync } from 'node:fs';
import t from 'tap';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { graph, newWorkspace, ok } from '../helpers/http-fixtures.ts';

// Workspace isolation swept across every operation of the committed OpenAPI document and
// GraphQL's node(id): workspace B's key, given workspace A's ids, gets 404 (GraphQL: null) —
// never 403, never A's data — and A's resources are unchanged afterwards.

const spec = JSON.parse(readFileSync(new URL('../../openapi/openapi.json', import.meta.url), 'utf8'));
const MARK = 'tenant-a-private';

t.test('every route and node(id) with another workspace’s ids', async (t) => {
  const h = await startTestBackhaul(t);
  const a = await graph(h, 'iso');
  await ok(h.request('PATCH', `/v1/syncs/${a.sync.id}`, { body: { name: `${MARK} sync` } }), 200);
  const maps = await ok(h.request('PUT', `/v1/syncs/${a.sync.id}/mappings`, { body: [{ destinationField: 'email', source: { column: 'email' } }] }), 200);
  const mappingId = (Array.isArray(maps) ? maps : (maps.data ?? maps.items))[0].id;
  const run = await ok(h.request('POST', `/v1/syncs/${a.sync.id}/runs`, { body: {} }), 202);
  const wh = await ok(h.request('POST', '/v1/webhook-endpoints', { body: { slug: 'iso-wh', name: `${MARK} hook`, url: 'http://127.0.0.1:9/hook' } }));
  const ach = await ok(h.request('POST', '/v1/alert-channels', { body: { slug: 'iso-ach', name: `${MARK} alerts`, type: 'webhook', config: { url: 'http://127.0.0.1:9/alert' } } }));
  const key = await ok(h.request('POST', '/v1/api-keys', { body: { name: `${MARK} key`, scopes: ['read'] } }));
  const b = await newWorkspace(h, 'iso-other');

  const refs: Record<string, string> = {
    connections: a.src.id,
    models: a.model.id,
    syncs: a.sync.id,
    'webhook-endpoints': wh.id,
    'alert-channels': ach.id,
    'api-keys': key.id,
    runs: run.id,
  };
  const fill = (path: string) => {
    const parts = path.split('/');
    return parts
      .map((p, i) => {
        const m = /^\{(\w+)\}$/.exec(p);
        if (!m) return p;
        if (m[1] === 'object') return 'contacts';
        if (m[1] === 'primaryKey') return '1';
        if (parts[i - 1] === 'mappings') return mappingId;
        if (parts[i - 1] === 'deliveries') return 'whd_00000000000000000000';
        return refs[parts[i - 1]] ?? 'unknown';
      })
      .join('/');
  };
  const bodies: Record<string, unknown> = {
    PATCH: { name: 'hijacked' },
    PUT: { name: 'hijacked' },
    POST: {},
  };

  const putSchema = (path: string) => {
    let sch = spec.paths[path]?.put?.requestBody?.content?.['application/json']?.schema ?? {};
    if (sch.$ref) sch = sch.$ref.split('/').slice(1).reduce((o: any, k: string) => o[k], spec);
    return Object.keys(sch.properties ?? {});
  };
  const fake = (id: string) => id.replace(/^([a-z]+_)(.*)$/, (_, p: string, rest: string) => p + '0'.repeat(rest.length));
  const allIds = [...Object.values(refs), mappingId];

  let checked = 0;
  for (const [path, methods] of Object.entries(spec.paths as Record<string, Record<string, any>>)) {
    if (!path.includes('{')) continue;
    for (const method of Object.keys(methods).map((m) => m.toUpperCase())) {
      const url = fill(path);
      // Bodies valid for the resource, so that only ownership can refuse the request.
      let body = bodies[method];
      if (path.endsWith('/mappings/{id}') && method !== 'GET' && method !== 'DELETE') body = method === 'PATCH' ? { source: { column: 'email' } } : { destinationField: 'email', source: { column: 'email' } };
      else if (path.endsWith('/mappings') && method === 'PUT') body = [{ destinationField: 'email', source: { column: 'email' } }];
      else if (path.endsWith('/mappings') && method === 'POST') body = { destinationField: 'email', source: { column: 'email' } };
      else if (method === 'PUT') {
        const own = await h.request('GET', url);
        const allowed = putSchema(path);
        body = { ...Object.fromEntries(Object.entries(own.body ?? {}).filter(([k]) => allowed.includes(k))), name: 'hijacked' };
      }
      const send = (u: string) => h.request(method, u, { token: b.token, ...(method === 'GET' || method === 'DELETE' ? {} : { body }) });
      const res = await send(url);
      // The same request with ids that never existed: A's ids must be indistinguishable from them.
      let fakeUrl = url;
      for (const id of allIds) fakeUrl = fakeUrl.split(id).join(fake(id));
      const never = await send(fakeUrl);
      checked++;
      t.ok(res.status === 404 || (res.status === never.status && res.status !== 403 && res.status < 500), `${method} ${path} → ${res.status} ${res.status === 404 ? '' : res.text.slice(0, 300)}`);
      t.equal(`${res.status} ${res.body?.code}`, `${never.status} ${never.body?.code}`, `${method} ${path}: same answer as for an id that never existed`);
      t.notOk(res.text.includes(MARK) || (res.text.includes(a.sync.id) && res.status < 300), `${method} ${path} shows nothing of workspace A`);
    }
  }
  t.ok(checked >= 40, `${checked} operations checked`);

  // A's resources are all there, unchanged.
  for (const [what, url] of [
    ['sync', `/v1/syncs/${a.sync.id}`],
    ['webhook endpoint', `/v1/webhook-endpoints/${wh.id}`],
    ['alert channel', `/v1/alert-channels/${ach.id}`],
    ['connection', `/v1/connections/${a.src.id}`],
    ['model', `/v1/models/${a.model.id}`],
    ['run', `/v1/runs/${run.id}`],
    ['mapping', `/v1/syncs/${a.sync.id}/mappings/${mappingId}`],
  ]) {
    const r = await h.request('GET', url);
    t.equal(r.status, 200, `A's ${what} still exists`);
    t.not(r.body?.name, 'hijacked', `A's ${what} was not changed`);
  }
  const keys = await h.request('GET', '/v1/api-keys');
  t.ok(JSON.stringify(keys.body).includes(key.id), "A's api key was not revoked");

  // GraphQL node(id) with every one of A's ids.
  for (const id of [a.src.id, a.dst.id, a.model.id, a.sync.id, mappingId, run.id, wh.id, ach.id, key.id, h.bh.config.bootstrapApiKey ? 'ws_x' : 'ws_x']) {
    const r = await h.request('POST', '/graphql', { token: b.token, body: { query: 'query($id: ID!) { node(id: $id) { id __typename } }', variables: { id } } });
    t.ok(r.status === 200 && r.body?.data?.node === null, `node(${id.slice(0, 4)}…) is null for workspace B: ${r.text.slice(0, 200)}`);
    const own = await h.request('POST', '/graphql', { body: { query: 'query($id: ID!) { node(id: $id) { id } }', variables: { id } } });
    if (own.body?.data?.node) t.equal(own.body.data.node.id, id, 'and visible to workspace A (the query itself works)');
  }
});
