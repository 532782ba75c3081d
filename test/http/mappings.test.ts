import t from 'tap';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { controlDb, graph, ok } from '../helpers/http-fixtures.ts';

// Mappings (a sync's child collection) and what deleting depended-on resources does.

t.test('mappings', async (t) => {
  const h = await startTestBackhaul(t);
  const sql = controlDb(h);
  t.teardown(() => sql.end());
  const g = await graph(h, 'm');
  const base = `/v1/syncs/${g.sync.slug}/mappings`;

  t.test('CRUD', async (t) => {
    const c = await h.request('POST', base, { body: { destinationField: 'firstname', source: { column: 'first_name' } } });
    t.equal(c.status, 201);
    t.match(c.body, { id: /^map_/, syncId: g.sync.id, destinationField: 'firstname', source: { column: 'first_name' }, version: 1 });
    t.equal(c.headers.get('location'), `/v1/syncs/${g.sync.id}/mappings/${c.body.id}`);
    t.equal(c.headers.get('etag'), '"1"');
    const id = c.body.id;
    for (const sref of [g.sync.id, g.sync.slug]) {
      const got = await h.request('GET', `/v1/syncs/${sref}/mappings/${id}`);
      t.equal(got.status, 200);
      t.same(got.body, c.body);
    }
    for (const source of [{ static: 'fixed' }, { static: null }, { template: '{{first_name}} {{email}}' }, { lookup: { object: 'owners', matchField: 'email', sourceColumn: 'owner_email', resultField: 'id' } }]) {
      const r = await h.request('PATCH', `${base}/${id}`, { body: { source } });
      t.equal(r.status, 200, `source ${JSON.stringify(source)}`);
      t.same(r.body.source, source);
      t.equal(r.body.destinationField, 'firstname', 'field kept');
    }
    const cur = await ok(h.request('GET', `${base}/${id}`), 200);
    t.equal(cur.version, 5);
    const stale = await h.request('PATCH', `${base}/${id}`, { body: { destinationField: 'fn' }, headers: { 'if-match': '"4"' } });
    t.equal(stale.status, 412);
    t.equal(stale.body.code, 'version_mismatch');
    const put = await h.request('PUT', `${base}/${id}`, { body: { destinationField: 'fname', source: { column: 'first_name' } }, headers: { 'if-match': '"5"' } });
    t.equal(put.status, 200);
    t.match(put.body, { destinationField: 'fname', source: { column: 'first_name' }, version: 6 });
    const partialPut = await h.request('PUT', `${base}/${id}`, { body: { destinationField: 'fname' } });
    t.equal(partialPut.status, 400, 'PUT needs the whole mapping');

    for (const bad of [{ column: 'a', static: 1 }, {}, { column: '' }, { lookup: { object: 'x' } }, { sql: 'drop table x' }]) {
      const r = await h.request('POST', base, { body: { destinationField: 'bad', source: bad } });
      t.equal(r.status, 400, `source ${JSON.stringify(bad)} rejected`);
      t.equal(r.body.code, 'validation_failed');
    }

    const tpl = await h.request('POST', base, { body: { destinationField: 'bad', source: { template: '{{unclosed' } } });
    t.equal(tpl.status, 400, 'a template that does not compile is refused');
    t.equal(tpl.body.code, 'invalid_template');
    t.equal(tpl.body.errors[0].path, '/source/template');
    const tplSet = await h.request('PUT', base, { body: [{ destinationField: 'a', source: { column: 'a' } }, { destinationField: 'b', source: { template: '{{ a | nosuchfilter }}' } }] });
    t.equal(tplSet.status, 400);
    t.equal(tplSet.body.errors[0].path, '/1/source/template');

    const list = await ok(h.request('GET', base), 200);
    t.same(list.data.map((m: { id: string }) => m.id), [id]);
    t.equal(list.nextCursor, null);

    t.equal((await h.request('DELETE', `${base}/${id}`, { headers: { 'if-match': '"1"' } })).status, 412);
    t.equal((await h.request('DELETE', `${base}/${id}`)).status, 204);
    t.equal((await h.request('GET', `${base}/${id}`)).status, 404);
    t.equal((await h.request('DELETE', `${base}/${id}`)).status, 404);
    t.equal((await h.request('GET', '/v1/syncs/no-such-sync/mappings')).status, 404);
    t.equal((await h.request('POST', '/v1/syncs/no-such-sync/mappings', { body: { destinationField: 'x', source: { column: 'y' } } })).status, 404);
  });

  t.test('a destination field appears once', async (t) => {
    await ok(h.request('POST', base, { body: { destinationField: 'email', source: { column: 'email' } } }));
    const other = await ok(h.request('POST', base, { body: { destinationField: 'lastname', source: { column: 'last_name' } } }));
    const dup = await h.request('POST', base, { body: { destinationField: 'email', source: { static: 'x' } } });
    t.equal(dup.status, 409);
    t.equal(dup.body.code, 'mapping_field_taken');
    t.same(dup.body.errors, [{ path: '/destinationField', message: 'is already mapped' }]);
    const ren = await h.request('PATCH', `${base}/${other.id}`, { body: { destinationField: 'email' } });
    t.equal(ren.status, 409, 'renaming onto a mapped field');
    t.equal(ren.body.code, 'mapping_field_taken');
    t.equal((await ok(h.request('GET', `${base}/${other.id}`), 200)).destinationField, 'lastname');
    const n = await sql`select count(*)::int as n from mappings where sync_id = ${g.sync.id} and destination_field = 'email'`;
    t.equal(n[0].n, 1);
    // the same field on another sync is fine
    const g2 = await graph(h, 'm2');
    t.equal((await h.request('POST', `/v1/syncs/${g2.sync.id}/mappings`, { body: { destinationField: 'email', source: { column: 'email' } } })).status, 201);
  });

  t.test('PUT /mappings replaces the set atomically; kept fields keep their ids', async (t) => {
    const before = await ok(h.request('GET', base), 200);
    const email = before.data.find((m: { destinationField: string }) => m.destinationField === 'email');
    const last = before.data.find((m: { destinationField: string }) => m.destinationField === 'lastname');
    t.ok(email && last);

    // a set with a duplicate field: 400, nothing changed
    const dup = await h.request('PUT', base, {
      body: [
        { destinationField: 'email', source: { column: 'email' } },
        { destinationField: 'phone', source: { column: 'phone' } },
        { destinationField: 'phone', source: { column: 'mobile' } },
      ],
    });
    t.equal(dup.status, 400);
    t.equal(dup.body.code, 'duplicate_destination_field');
    t.same(dup.body.errors, [{ path: '/2/destinationField', message: '"phone" appears more than once' }]);
    t.same((await ok(h.request('GET', base), 200)).data, before.data, 'nothing changed');
    const invalid = await h.request('PUT', base, { body: [{ destinationField: 'email', source: { column: 'email' } }, { destinationField: 'x', source: 5 }] });
    t.equal(invalid.status, 400);
    t.match(invalid.body.errors[0].path, /^\/1\/source/);
    t.same((await ok(h.request('GET', base), 200)).data, before.data, 'nothing changed');

    const stale = await h.request('PUT', base, { body: [], headers: { 'if-match': '"99"' } });
    t.equal(stale.status, 412, 'If-Match checks the sync version');
    t.same((await ok(h.request('GET', base), 200)).data, before.data);

    const auditBefore = (await sql`select count(*)::int as n from audit_events where resource_type = 'mapping'`)[0].n;
    const r = await h.request('PUT', base, {
      body: [
        { destinationField: 'email', source: { column: 'email' } }, // kept, unchanged
        { destinationField: 'firstname', source: { template: '{{first_name}}' } }, // new
        // lastname: removed
      ],
      // Earlier mapping writes bumped the sync's version: send the current one.
      headers: { 'if-match': (await h.request('GET', `/v1/syncs/${g.sync.id}`)).headers.get('etag')! },
    });
    t.equal(r.status, 200);
    const byField = new Map(r.body.data.map((m: { destinationField: string }) => [m.destinationField, m]));
    t.same([...byField.keys()].sort(), ['email', 'firstname']);
    t.same(byField.get('email'), email, 'the kept mapping is untouched: same id, same version');
    t.match(byField.get('firstname'), { id: /^map_/, version: 1 });
    t.equal((await h.request('GET', `${base}/${last.id}`)).status, 404, 'the removed mapping is gone');
    const auditAfter = (await sql`select count(*)::int as n from audit_events where resource_type = 'mapping'`)[0].n;
    t.equal(auditAfter - auditBefore, 2, 'one create + one delete audited');

    const changed = await ok(h.request('PUT', base, { body: [{ destinationField: 'email', source: { static: 'same@example.com' } }, { destinationField: 'firstname', source: { template: '{{first_name}}' } }] }), 200);
    const e2 = changed.data.find((m: { destinationField: string }) => m.destinationField === 'email');
    t.equal(e2.id, email.id, 'a kept field with a new source keeps its id');
    t.equal(e2.version, email.version + 1, 'and bumps its version');
    // a lookup with keys in another order is the same source: no new version
    await ok(h.request('PUT', base, { body: [{ destinationField: 'owner', source: { lookup: { object: 'o', matchField: 'm', sourceColumn: 's', resultField: 'r' } } }] }), 200);
    const again = await ok(h.request('PUT', base, { body: [{ destinationField: 'owner', source: { lookup: { resultField: 'r', sourceColumn: 's', matchField: 'm', object: 'o' } } }] }), 200);
    t.equal(again.data[0].version, 1, 'same source in another key order is unchanged');
    const empty = await ok(h.request('PUT', base, { body: [] }), 200);
    t.same(empty.data, []);
  });

  t.test('deleting what others depend on', async (t) => {
    const d = await graph(h, 'dep');
    await ok(h.request('POST', `/v1/syncs/${d.sync.id}/mappings`, { body: { destinationField: 'email', source: { column: 'email' } } }));
    await ok(h.request('POST', `/v1/syncs/${d.sync.id}/mappings`, { body: { destinationField: 'firstname', source: { column: 'first_name' } } }));

    const src = await h.request('DELETE', `/v1/connections/${d.src.slug}`);
    t.equal(src.status, 409, 'a connection used by a model');
    t.equal(src.body.code, 'resource_in_use');
    t.same(src.body.dependents, [{ type: 'model', id: d.model.id, slug: d.model.slug }]);
    t.match(src.body.detail, d.model.slug);
    const dst = await h.request('DELETE', `/v1/connections/${d.dst.id}`);
    t.equal(dst.status, 409, 'a connection used by a sync');
    t.same(dst.body.dependents, [{ type: 'sync', id: d.sync.id, slug: d.sync.slug }]);
    const mdl = await h.request('DELETE', `/v1/models/${d.model.id}`);
    t.equal(mdl.status, 409, 'a model used by a sync');
    t.equal(mdl.body.code, 'resource_in_use');
    t.same(mdl.body.dependents, [{ type: 'sync', id: d.sync.id, slug: d.sync.slug }]);
    for (const p of [`/v1/connections/${d.src.id}`, `/v1/connections/${d.dst.id}`, `/v1/models/${d.model.id}`]) {
      t.equal((await h.request('GET', p)).status, 200, `${p} still there`);
    }

    t.equal((await h.request('DELETE', `/v1/syncs/${d.sync.slug}`)).status, 204);
    const left = await sql`select count(*)::int as n from mappings where sync_id = ${d.sync.id}`;
    t.equal(left[0].n, 0, "deleting a sync deletes its mappings");
    t.equal((await h.request('GET', `/v1/syncs/${d.sync.id}/mappings`)).status, 404);

    t.equal((await h.request('DELETE', `/v1/connections/${d.dst.id}`)).status, 204, 'the destination is free now');
    t.equal((await h.request('DELETE', `/v1/models/${d.model.id}`)).status, 204, 'the model is free now');
    t.equal((await h.request('DELETE', `/v1/connections/${d.src.id}`)).status, 204, 'and its connection');
  });
});
