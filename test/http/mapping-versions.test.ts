import t from 'tap';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { controlDb, graph, ok, syncBody } from '../helpers/http-fixtures.ts';

// Mappings are part of a sync's configuration: every change to them bumps the sync's version, so
// If-Match on the sync's ETag guards the set against lost updates (issue 16, item 3).

t.test('mapping changes bump the sync version', async (t) => {
  const h = await startTestBackhaul(t);
  const sql = controlDb(h);
  t.teardown(() => sql.end());
  const g = await graph(h, 'mv');
  const base = `/v1/syncs/${g.sync.slug}/mappings`;
  const version = async () => (await ok(h.request('GET', `/v1/syncs/${g.sync.id}`), 200)).version as number;

  t.test('PUT /mappings answers the new sync ETag; the same set again changes nothing', async (t) => {
    const v0 = await version();
    const set = [{ destinationField: 'email', source: { column: 'email' } }];
    const r = await h.request('PUT', base, { body: set, headers: { 'if-match': `"${v0}"` } });
    t.equal(r.status, 200);
    t.equal(r.headers.get('etag'), `"${v0 + 1}"`, 'ETag is the new sync version');
    t.equal(r.body.syncVersion, v0 + 1);
    t.equal(await version(), v0 + 1, 'the sync version was bumped');
    const again = await h.request('PUT', base, { body: set, headers: { 'if-match': `"${v0 + 1}"` } });
    t.equal(again.status, 200);
    t.equal(again.headers.get('etag'), `"${v0 + 1}"`, 'an identical set is a no-op');
    t.equal(await version(), v0 + 1);
  });

  t.test('two writers with the same ETag: one 200, one 412', async (t) => {
    const v = await version();
    const a = [{ destinationField: 'firstname', source: { column: 'first_name' } }];
    const b = [{ destinationField: 'lastname', source: { static: 'x' } }];
    const [ra, rb] = await Promise.all([
      h.request('PUT', base, { body: a, headers: { 'if-match': `"${v}"` } }),
      h.request('PUT', base, { body: b, headers: { 'if-match': `"${v}"` } }),
    ]);
    t.same([ra.status, rb.status].sort(), [200, 412], 'the second writer loses');
    const loser = ra.status === 412 ? ra : rb;
    t.equal(loser.body.code, 'version_mismatch');
    const winner = ra.status === 200 ? a : b;
    const now = await ok(h.request('GET', base), 200);
    t.same(
      now.data.map((m: { destinationField: string; source: unknown }) => ({ destinationField: m.destinationField, source: m.source })),
      winner,
      "only the winner's set is stored",
    );
  });

  t.test('single-mapping writes bump the sync version too', async (t) => {
    let v = await version();
    const c = await h.request('POST', base, { body: { destinationField: 'extra', source: { column: 'email' } } });
    t.equal(c.status, 201, c.text);
    t.equal(await version(), ++v, 'create');
    await ok(h.request('PATCH', `${base}/${c.body.id}`, { body: { source: { static: 1 } } }), 200);
    t.equal(await version(), ++v, 'update');
    await ok(h.request('PATCH', `${base}/${c.body.id}`, { body: { source: { static: 1 } } }), 200);
    t.equal(await version(), v, 'a no-op update does not bump');
    t.equal((await h.request('DELETE', `${base}/${c.body.id}`)).status, 204);
    t.equal(await version(), ++v, 'delete');
  });

  t.test('a sync PUT/POST with mappings is one atomic write', async (t) => {
    const body = syncBody('with-maps', g.model.id, g.dst.id, {
      slug: undefined,
      mappings: [
        { destinationField: 'email', source: { column: 'email' } },
        { destinationField: 'firstname', source: { column: 'first_name' } },
      ],
    });
    const created = await h.request('PUT', '/v1/syncs/with-maps', { body });
    t.equal(created.status, 201);
    t.equal(created.body.version, 1);
    t.notOk('mappings' in created.body, 'the sync view stays the same shape (mappings are read at /mappings)');
    const listed = await ok(h.request('GET', '/v1/syncs/with-maps/mappings'), 200);
    t.same(listed.data.map((m: { destinationField: string }) => m.destinationField), ['email', 'firstname'], 'stored with the sync');

    // Re-applying the same body is a no-op (no version bump, no audit event).
    const audits = async () => (await sql`select count(*)::int as n from audit_events where resource_id = ${created.body.id}`)[0].n;
    const before = await audits();
    const same = await h.request('PUT', '/v1/syncs/with-maps', { body, headers: { 'if-match': '"1"' } });
    t.equal(same.status, 200);
    t.equal(same.body.version, 1, 'same config and mappings: no bump');
    t.equal(await audits(), before, 'and no audit event');

    // Only the mappings change: one bump.
    const changed = await h.request('PUT', '/v1/syncs/with-maps', {
      body: { ...body, mappings: [{ destinationField: 'email', source: { column: 'email' } }] },
      headers: { 'if-match': '"1"' },
    });
    t.equal(changed.status, 200);
    t.equal(changed.body.version, 2);
    t.equal((await ok(h.request('GET', '/v1/syncs/with-maps/mappings'), 200)).data.length, 1);

    // A bad mapping refuses the whole write: the sync is not changed either.
    const bad = await h.request('PUT', '/v1/syncs/with-maps', {
      body: { ...body, name: 'Renamed', mappings: [{ destinationField: 'a', source: { column: 'x' } }, { destinationField: 'a', source: { column: 'y' } }] },
    });
    t.equal(bad.status, 400);
    t.equal(bad.body.code, 'duplicate_destination_field');
    t.equal(bad.body.errors[0].path, '/mappings/1/destinationField');
    const after = await ok(h.request('GET', '/v1/syncs/with-maps'), 200);
    t.equal(after.name, body.name, 'nothing half-applied');
    t.equal(after.version, 2);

    // POST too.
    const posted = await h.request('POST', '/v1/syncs', {
      body: syncBody('posted-maps', g.model.id, g.dst.id, { mappings: [{ destinationField: 'email', source: { column: 'email' } }] }),
    });
    t.equal(posted.status, 201);
    t.equal((await ok(h.request('GET', '/v1/syncs/posted-maps/mappings'), 200)).data.length, 1);

    // A PUT without `mappings` leaves them alone (the field is optional).
    const { mappings: _m, ...noMaps } = body as typeof body & { mappings?: unknown };
    await ok(h.request('PUT', '/v1/syncs/with-maps', { body: { ...noMaps, name: 'No maps field' } }), 200);
    t.equal((await ok(h.request('GET', '/v1/syncs/with-maps/mappings'), 200)).data.length, 1, 'mappings untouched');
  });
});
