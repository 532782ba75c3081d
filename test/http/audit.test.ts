import t from 'tap';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { controlDb, httpConnection, modelBody, newKey, ok, pgConnection, syncBody } from '../helpers/http-fixtures.ts';

// Each write records who (key id), what (action, resource), which fields; the log is filterable.

t.test('audit', async (t) => {
  const h = await startTestBackhaul(t);
  const sql = controlDb(h);
  t.teardown(() => sql.end());
  const writer = await newKey(h, ['write']);
  const w = writer.token;
  const rid = 'audit-req-1';

  const t0 = new Date();
  const conn = await ok(h.request('POST', '/v1/connections', { token: w, body: pgConnection('aud-src'), headers: { 'x-request-id': rid } }));
  const dst = await ok(h.request('POST', '/v1/connections', { token: w, body: httpConnection('aud-dst') }));
  const model = await ok(h.request('POST', '/v1/models?validate=false', { token: w, body: modelBody('aud-model', conn.id) }));
  await ok(h.request('PATCH', `/v1/models/${model.id}?validate=false`, { token: w, body: { name: 'New name', sql: 'select 2 as id' } }), 200);
  await ok(h.request('PUT', `/v1/models/${model.id}?validate=false`, { token: w, body: modelBody('aud-model', conn.id, { slug: undefined, name: 'Put name' }) }), 200);
  const sync = await ok(h.request('POST', '/v1/syncs', { token: w, body: syncBody('aud-sync', model.id, dst.id) }));
  const map = await ok(h.request('POST', `/v1/syncs/${sync.id}/mappings`, { token: w, body: { destinationField: 'email', source: { column: 'email' } } }));
  await ok(h.request('PATCH', `/v1/connections/${conn.id}`, { token: w, body: { config: { port: 5432 }, name: 'Renamed' } }), 200);
  await ok(h.request('DELETE', `/v1/syncs/${sync.id}`, { token: w }), 204);

  const all = await ok(h.request('GET', '/v1/audit-events?limit=200'), 200);
  const mine = all.data.filter((e: { actorKeyId: string }) => e.actorKeyId === writer.id);
  const summary = mine.map((e: { action: string; resourceType: string; resourceId: string }) => `${e.action} ${e.resourceType} ${e.resourceId}`);
  t.same(
    summary,
    [
      `delete sync ${sync.id}`,
      `update connection ${conn.id}`,
      `update sync ${sync.id}`, // a mapping change bumps its sync's version, audited as ['mappings']
      `create mapping ${map.id}`,
      `create sync ${sync.id}`,
      `replace model ${model.id}`,
      `update model ${model.id}`,
      `create model ${model.id}`,
      `create connection ${dst.id}`,
      `create connection ${conn.id}`,
    ],
    'every write, newest first, attributed to the key that made it',
  );
  const byId = (action: string, id: string) => mine.find((e: { action: string; resourceId: string }) => e.action === action && e.resourceId === id);
  t.same(byId('update', model.id).changedFields.sort(), ['name', 'sql'], 'PATCH records the changed field names');
  t.same(byId('replace', model.id).changedFields.sort(), ['name', 'sql'], 'PUT records what differs');
  t.same(byId('update', conn.id).changedFields.sort(), ['name'], 'a config patch that changes nothing (port already 5432) is not a change');
  t.same(byId('create', model.id).changedFields.sort(), ['connectionId', 'name', 'primaryKey', 'slug', 'sql']);
  t.same(byId('delete', sync.id).changedFields, []);
  t.equal(byId('create', conn.id).requestId, rid, 'the request id is recorded');
  t.ok(mine.every((e: { createdAt: string; id: string }) => /^aud_/.test(e.id) && !Number.isNaN(Date.parse(e.createdAt))));

  // api keys and workspaces are audited too (by the owner key)
  const own = all.data.filter((e: { actorKeyId: string }) => e.actorKeyId !== writer.id);
  t.ok(own.some((e: { action: string; resourceType: string; resourceId: string }) => e.action === 'create' && e.resourceType === 'api_key' && e.resourceId === writer.id));

  t.test('filters', async (t) => {
    const f1 = await ok(h.request('GET', `/v1/audit-events?resourceType=model&resourceId=${model.id}`), 200);
    t.same(f1.data.map((e: { action: string }) => e.action), ['replace', 'update', 'create']);
    const f2 = await ok(h.request('GET', '/v1/audit-events?resourceType=connection'), 200);
    t.ok(f2.data.length === 3 && f2.data.every((e: { resourceType: string }) => e.resourceType === 'connection'));
    const f3 = await ok(h.request('GET', `/v1/audit-events?resourceId=${sync.id}`), 200);
    t.same(f3.data.map((e: { action: string; changedFields: string[] }) => `${e.action} ${e.changedFields.join(',')}`).slice(0, 2), ['delete ', 'update mappings']);
    t.same(f3.data.map((e: { action: string }) => e.action), ['delete', 'update', 'create']);

    const future = new Date(Date.now() + 60_000).toISOString();
    t.same((await ok(h.request('GET', `/v1/audit-events?since=${encodeURIComponent(future)}`), 200)).data, [], 'since in the future: nothing');
    const sinceStart = await ok(h.request('GET', `/v1/audit-events?since=${encodeURIComponent(t0.toISOString())}&limit=200`), 200);
    t.equal(sinceStart.data.length, mine.length, 'since: the writes after t0');
    // a point between two writes: only the later ones
    const [row] = await sql`select created_at from audit_events where resource_id = ${sync.id} and action = 'delete'`;
    await sql`update audit_events set created_at = created_at - interval '1 hour' where created_at < ${row.created_at}`;
    const recent = await ok(h.request('GET', `/v1/audit-events?since=${encodeURIComponent(new Date(Date.now() - 30 * 60_000).toISOString())}`), 200);
    t.same(recent.data.map((e: { action: string; resourceId: string }) => `${e.action} ${e.resourceId}`), [`delete ${sync.id}`]);
    const until = await ok(h.request('GET', `/v1/audit-events?until=${encodeURIComponent(new Date(Date.now() - 30 * 60_000).toISOString())}&limit=200`), 200);
    t.equal(until.data.length, all.data.length - 1, 'until: everything older');

    const bad = await h.request('GET', '/v1/audit-events?since=yesterday');
    t.equal(bad.status, 400, 'since must be a date-time');
    t.equal(bad.body.code, 'validation_failed');

    // pagination (newest first)
    const p1 = await ok(h.request('GET', '/v1/audit-events?limit=3'), 200);
    const p2 = await ok(h.request('GET', `/v1/audit-events?limit=3&cursor=${p1.nextCursor}`), 200);
    t.same([...p1.data, ...p2.data].map((e: { id: string }) => e.id), all.data.slice(0, 6).map((e: { id: string }) => e.id));
  });
});
