import t from 'tap';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { controlDb, graph, httpConnection, modelBody, newWorkspace, ok, pgConnection, syncBody } from '../helpers/http-fixtures.ts';

// Workspaces are the tenant boundary: another workspace's resources answer 404 by id and by
// slug, for every verb, and cannot be referenced.

t.test('workspaces', async (t) => {
  const h = await startTestBackhaul(t);
  const sql = controlDb(h);
  t.teardown(() => sql.end());

  const created = await h.request('POST', '/v1/workspaces', { body: { slug: 'acme', name: 'Acme' } });
  t.equal(created.status, 201);
  t.match(created.body.workspace, { id: /^ws_/, slug: 'acme', name: 'Acme' });
  t.match(created.body.apiKey, { id: /^key_/, token: /^bh_/, scopes: ['admin'], owner: false });
  const acme = { id: created.body.workspace.id, token: created.body.apiKey.token as string };
  const keyRow = await sql`select workspace_id, token_hash from api_keys where id = ${created.body.apiKey.id}`;
  t.equal(keyRow[0].workspace_id, acme.id, 'the key belongs to the new workspace');
  t.not(keyRow[0].token_hash, acme.token, 'stored hashed');

  t.test('the admin key is shown once: listing keys never shows it again', async (t) => {
    const keys = await ok(h.request('GET', '/v1/api-keys', { token: acme.token }), 200);
    t.equal(keys.data.length, 1);
    t.notOk('token' in keys.data[0]);
  });

  t.test('workspace slug unique; list shows workspaces to the owner', async (t) => {
    const dup = await h.request('POST', '/v1/workspaces', { body: { slug: 'acme', name: 'again' } });
    t.equal(dup.status, 409);
    t.equal(dup.body.code, 'slug_taken');
    const list = await ok(h.request('GET', '/v1/workspaces'), 200);
    t.same(list.data.map((w: { slug: string }) => w.slug).sort(), ['acme', 'default']);
  });

  // Workspace A = default (h.token), workspace B = acme.
  const a = await graph(h, 'a');
  const mappingA = await ok(h.request('POST', `/v1/syncs/${a.sync.id}/mappings`, { body: { destinationField: 'firstname', source: { column: 'first_name' } } }));
  const b = await graph(h, 'b', acme.token);

  t.test('lists show only the own workspace', async (t) => {
    for (const p of ['/v1/connections', '/v1/models', '/v1/syncs']) {
      const la = await ok(h.request('GET', p), 200);
      const lb = await ok(h.request('GET', p, { token: acme.token }), 200);
      t.ok(la.data.length > 0 && lb.data.length > 0, `${p}: both have some`);
      t.ok(la.data.every((x: { slug: string }) => x.slug.startsWith('a-')), `${p}: A sees only A`);
      t.ok(lb.data.every((x: { slug: string }) => x.slug.startsWith('b-')), `${p}: B sees only B`);
    }
    const audit = await ok(h.request('GET', '/v1/audit-events?limit=200', { token: acme.token }), 200);
    const bIds = new Set([b.src.id, b.dst.id, b.model.id, b.sync.id]);
    t.ok(audit.data.length >= 4);
    t.ok(audit.data.every((e: { resourceId: string }) => bIds.has(e.resourceId)), 'B audit shows only B events');
  });

  t.test("another workspace's resources answer 404 by id and by slug, for every verb", async (t) => {
    const targets: [string, { id: string; slug: string }, unknown][] = [
      ['/v1/connections', a.src, pgConnection(a.src.slug)],
      ['/v1/connections', a.dst, httpConnection(a.dst.slug)],
      ['/v1/models', a.model, modelBody(a.model.slug, b.src.id)],
      ['/v1/syncs', a.sync, syncBody(a.sync.slug, b.model.id, b.dst.id)],
    ];
    for (const [base, res, putBody] of targets) {
      const before = await ok(h.request('GET', `${base}/${res.id}`), 200);
      for (const ref of [res.id, res.slug]) {
        const path = `${base}/${ref}`;
        const g = await h.request('GET', path, { token: acme.token });
        t.equal(g.status, 404, `GET ${path}`);
        t.equal(g.body.code, 'not_found');
        t.notOk(g.text.includes(res.id) && ref !== res.id, 'the 404 does not reveal the id');
        t.equal((await h.request('PATCH', path, { token: acme.token, body: { name: 'hijacked' } })).status, 404, `PATCH ${path}`);
        t.equal((await h.request('DELETE', path, { token: acme.token })).status, 404, `DELETE ${path}`);
        const put = await h.request('PUT', `${path}?validate=false`, { token: acme.token, body: { ...(putBody as object), slug: undefined } });
        // PUT by id: an id that does not exist here cannot be created (422); by slug, PUT creates
        // a new resource in B and must leave A's alone.
        if (ref === res.id) t.equal(put.status, 422, `PUT ${path} (unknown id here)`);
        else {
          t.equal(put.status, 201, `PUT ${path} creates B's own`);
          t.not(put.body.id, res.id);
          await ok(h.request('DELETE', `${base}/${put.body.id}`, { token: acme.token }), 204);
        }
      }
      const still = await ok(h.request('GET', `${base}/${res.id}`), 200);
      t.equal(still.name, (res as { name?: string }).name, `${base}/${res.slug} unchanged in A`);
      t.equal(still.version, before.version, 'and its version too');
    }
    // mappings: B cannot address A's sync, nor A's mapping through its own sync.
    t.equal((await h.request('GET', `/v1/syncs/${a.sync.id}/mappings`, { token: acme.token })).status, 404);
    t.equal((await h.request('GET', `/v1/syncs/${a.sync.slug}/mappings/${mappingA.id}`, { token: acme.token })).status, 404);
    t.equal((await h.request('GET', `/v1/syncs/${b.sync.id}/mappings/${mappingA.id}`, { token: acme.token })).status, 404);
    t.equal((await h.request('PATCH', `/v1/syncs/${b.sync.id}/mappings/${mappingA.id}`, { token: acme.token, body: { destinationField: 'x' } })).status, 404);
    t.equal((await h.request('DELETE', `/v1/syncs/${b.sync.id}/mappings/${mappingA.id}`, { token: acme.token })).status, 404);
    t.equal((await h.request('POST', `/v1/syncs/${a.sync.id}/mappings`, { token: acme.token, body: { destinationField: 'y', source: { column: 'c' } } })).status, 404);
    t.equal((await h.request('PUT', `/v1/syncs/${a.sync.id}/mappings`, { token: acme.token, body: [] })).status, 404);
    const ma = await ok(h.request('GET', `/v1/syncs/${a.sync.id}/mappings`), 200);
    t.same(ma.data.map((m: { id: string }) => m.id), [mappingA.id], "A's mappings untouched");
    // api keys: B cannot revoke A's keys
    const aKeys = await ok(h.request('GET', '/v1/api-keys'), 200);
    t.equal((await h.request('DELETE', `/v1/api-keys/${aKeys.data[0].id}`, { token: acme.token })).status, 404);
    t.equal((await h.request('GET', '/v1/connections')).status, 200);
  });

  t.test("a resource cannot reference another workspace's resources (422 invalid_reference)", async (t) => {
    for (const ref of [a.src.id, a.src.slug]) {
      const r = await h.request('POST', '/v1/models?validate=false', { token: acme.token, body: modelBody('steal', ref) });
      t.equal(r.status, 422, `model → A's connection ${ref}`);
      t.equal(r.body.code, 'invalid_reference');
      t.same(r.body.errors, [{ path: '/connectionId', message: 'no connection with this id or slug' }]);
    }
    const s1 = await h.request('POST', '/v1/syncs', { token: acme.token, body: syncBody('steal', a.model.id, b.dst.id) });
    t.equal(s1.status, 422);
    t.equal(s1.body.code, 'invalid_reference');
    t.equal(s1.body.errors[0].path, '/modelId');
    const s2 = await h.request('POST', '/v1/syncs', { token: acme.token, body: syncBody('steal', b.model.id, a.dst.id) });
    t.equal(s2.status, 422);
    t.equal(s2.body.errors[0].path, '/destinationId');
    const p = await h.request('PATCH', `/v1/models/${b.model.id}?validate=false`, { token: acme.token, body: { connectionId: a.src.id } });
    t.equal(p.status, 422, 'PATCH onto a foreign reference');
    const p2 = await h.request('PATCH', `/v1/syncs/${b.sync.id}`, { token: acme.token, body: { destinationId: a.dst.id } });
    t.equal(p2.status, 422);
    const rows = await sql`select count(*)::int as n from models where slug = 'steal'`;
    t.equal(rows[0].n, 0);
    t.equal((await sql`select count(*)::int as n from syncs where slug = 'steal'`)[0].n, 0);
  });

  t.test('the same slug may exist in two workspaces', async (t) => {
    const x = await ok(h.request('POST', '/v1/connections', { token: acme.token, body: pgConnection(a.src.slug) }));
    t.not(x.id, a.src.id);
    const mine = await ok(h.request('GET', `/v1/connections/${a.src.slug}`, { token: acme.token }), 200);
    t.equal(mine.id, x.id, 'a slug resolves within the caller’s workspace');
  });
});
