import t from 'tap';
import { startTestBackhaul, type TestBackhaul } from '../helpers/backhaul.ts';
import { controlDb, httpConnection, modelBody, ok, pgConnection, syncBody } from '../helpers/http-fixtures.ts';

// The uniform REST surface of connections, models and syncs: create, get by id/slug, list with
// pagination, PATCH, PUT (replace or create by slug), DELETE, versions, ETag and If-Match.

interface Kind {
  base: string;
  table: string;
  idPrefix: RegExp;
  query: string;
  create(slug: string): Record<string, unknown>;
  /** A partial change and what it must change, with one field it must leave as is. */
  patch: { body: Record<string, unknown>; changed: Record<string, unknown>; unchanged: string[] };
  /** A full replacement body (without slug). */
  replace(): Record<string, unknown>;
}

t.test('resources', async (t) => {
  const h = await startTestBackhaul(t);
  const sql = controlDb(h);
  t.teardown(() => sql.end());

  const src = await ok(h.request('POST', '/v1/connections', { body: pgConnection('fixture-src') }));
  const src2 = await ok(h.request('POST', '/v1/connections', { body: pgConnection('fixture-src2') }));
  const dst = await ok(h.request('POST', '/v1/connections', { body: httpConnection('fixture-dst') }));
  const model = await ok(h.request('POST', '/v1/models?validate=false', { body: modelBody('fixture-model', src.id) }));

  const kinds: Kind[] = [
    {
      base: '/v1/connections',
      table: 'connections',
      idPrefix: /^conn_[0-9a-z]{26}$/,
      query: '',
      create: (slug) => pgConnection(slug),
      patch: { body: { name: 'Renamed' }, changed: { name: 'Renamed' }, unchanged: ['config', 'type', 'slug'] },
      replace: () => ({ name: 'Replaced', type: 'postgres', config: { host: 'db.internal', database: 'other', user: 'reader' } }),
    },
    {
      base: '/v1/models',
      table: 'models',
      idPrefix: /^mdl_[0-9a-z]{26}$/,
      query: '?validate=false',
      create: (slug) => modelBody(slug, src.id),
      patch: { body: { sql: 'select 2 as id' }, changed: { sql: 'select 2 as id' }, unchanged: ['name', 'connectionId', 'primaryKey'] },
      replace: () => ({ name: 'Replaced', connectionId: src2.slug, sql: 'select 3 as pk', primaryKey: 'pk' }),
    },
    {
      base: '/v1/syncs',
      table: 'syncs',
      idPrefix: /^sync_[0-9a-z]{26}$/,
      query: '',
      create: (slug) => syncBody(slug, model.id, dst.id, { schedule: { type: 'interval', everySeconds: 600 }, enabled: false, delivery: { batchSize: 50 } }),
      patch: { body: { delivery: { concurrency: 2 } }, changed: { delivery: { batchSize: 50, concurrency: 2, maxRequestsPerSecond: null, maxRetries: 6 } }, unchanged: ['schedule', 'enabled', 'name', 'mode'] },
      replace: () => syncBody('ignored', model.slug, dst.slug, { slug: undefined, name: 'Replaced', mode: 'insert' }),
    },
  ];

  for (const k of kinds) {
    t.test(k.base, async (t) => {
      const body = k.create('first');
      const c = await h.request('POST', `${k.base}${k.query}`, { body });
      t.equal(c.status, 201, 'create: 201');
      t.match(c.body.id, k.idPrefix);
      t.equal(c.headers.get('location'), `${k.base}/${c.body.id}`);
      t.equal(c.headers.get('etag'), '"1"');
      t.equal(c.body.version, 1);
      t.equal(c.body.slug, 'first');
      t.match(c.body.createdAt, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      t.equal(c.body.createdAt, c.body.updatedAt);
      const id = c.body.id as string;

      t.test('slug unique: 409 slug_taken', async (t) => {
        const dup = await h.request('POST', `${k.base}${k.query}`, { body: k.create('first') });
        t.equal(dup.status, 409);
        t.equal(dup.body.code, 'slug_taken');
        t.same(dup.body.errors, [{ path: '/slug', message: 'is already used' }]);
        const n = await sql.unsafe(`select count(*)::int as n from ${k.table} where slug = 'first'`);
        t.equal(n[0].n, 1);
      });

      t.test('get by id and by slug', async (t) => {
        const byId = await h.request('GET', `${k.base}/${id}`);
        const bySlug = await h.request('GET', `${k.base}/first`);
        t.equal(byId.status, 200);
        t.same(byId.body, c.body, 'what was created is what is read');
        t.same(bySlug.body, byId.body);
        t.equal(byId.headers.get('etag'), '"1"');
        const missing = await h.request('GET', `${k.base}/does-not-exist`);
        t.equal(missing.status, 404);
        t.equal(missing.body.code, 'not_found');
      });

      t.test('list with pagination', async (t) => {
        for (const s of ['p-1', 'p-2', 'p-3', 'p-4']) await ok(h.request('POST', `${k.base}${k.query}`, { body: k.create(s) }));
        const all = await ok(h.request('GET', k.base), 200);
        t.equal(all.nextCursor, null, 'one page when everything fits');
        const seen: string[] = [];
        let cursor: string | null = null;
        let pages = 0;
        do {
          const q: string = `${k.base}?limit=2${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
          const page = await ok(h.request('GET', q), 200);
          t.ok(page.data.length <= 2);
          seen.push(...page.data.map((x: { id: string }) => x.id));
          cursor = page.nextCursor;
          pages++;
        } while (cursor && pages < 20);
        t.same(seen, all.data.map((x: { id: string }) => x.id), 'pages cover the list once, in order');
        t.equal(new Set(seen).size, seen.length, 'no duplicates');
        t.ok(seen.includes(id));
        t.equal(pages, Math.ceil(all.data.length / 2));

        const exact = await ok(h.request('GET', `${k.base}?limit=${all.data.length}`), 200);
        t.equal(exact.nextCursor, null, 'nextCursor null when the last page is exactly full');

        for (const bad of ['201', '0', '-1', 'abc', '1.5']) {
          const r = await h.request('GET', `${k.base}?limit=${bad}`);
          t.equal(r.status, 400, `limit=${bad}`);
          t.equal(r.body.code, 'validation_failed');
        }
        t.equal((await h.request('GET', `${k.base}?limit=200`)).status, 200);
        for (const bad of ['garbage', 'eyJ4IjoxfQ', Buffer.from('{"after":42}').toString('base64url'), '%FF%FE']) {
          const r = await h.request('GET', `${k.base}?cursor=${bad}`);
          t.equal(r.status, 400, `cursor=${bad}`);
          t.equal(r.body.code, 'invalid_cursor');
        }
      });

      t.test('PATCH changes only what is sent', async (t) => {
        const before = await ok(h.request('GET', `${k.base}/${id}`), 200);
        const r = await h.request('PATCH', `${k.base}/${id}${k.query}`, { body: k.patch.body });
        t.equal(r.status, 200);
        t.match(r.body, k.patch.changed);
        for (const f of k.patch.unchanged) t.same(r.body[f], before[f], `${f} unchanged`);
        t.equal(r.body.version, 2);
        t.equal(r.headers.get('etag'), '"2"');
        t.ok(r.body.updatedAt > before.updatedAt, 'updatedAt moves');
        t.equal(r.body.createdAt, before.createdAt);
        const again = await ok(h.request('GET', `${k.base}/first`), 200);
        t.same(again, r.body, 'persisted');

        const noop = await h.request('PATCH', `${k.base}/${id}${k.query}`, { body: k.patch.body });
        t.equal(noop.body.version, 2, 'a PATCH that changes nothing keeps the version');

        // rename by PATCH: the new slug addresses it; a taken slug is 409
        const ren = await h.request('PATCH', `${k.base}/first${k.query}`, { body: { slug: 'first-renamed' } });
        t.equal(ren.status, 200);
        t.equal(ren.body.slug, 'first-renamed');
        t.equal((await h.request('GET', `${k.base}/first`)).status, 404);
        t.equal((await h.request('GET', `${k.base}/first-renamed`)).body.id, id);
        const taken = await h.request('PATCH', `${k.base}/${id}${k.query}`, { body: { slug: 'p-1' } });
        t.equal(taken.status, 409);
        t.equal(taken.body.code, 'slug_taken');
        await ok(h.request('PATCH', `${k.base}/${id}${k.query}`, { body: { slug: 'first' } }), 200);
        t.equal((await h.request('PATCH', `${k.base}/nope${k.query}`, { body: { name: 'x' } })).status, 404);
      });

      t.test('If-Match', async (t) => {
        const cur = await ok(h.request('GET', `${k.base}/${id}`), 200);
        const v = cur.version as number;
        const auditBefore = await sql`select count(*)::int as n from audit_events where resource_id = ${id}`;
        for (const [method, b] of [
          ['PATCH', { name: 'stale' }],
          ['PUT', { ...k.replace(), name: 'stale' }],
          ['DELETE', undefined],
        ] as const) {
          for (const stale of [`"${v - 1}"`, `"${v + 1}"`, 'W/"999"', 'garbage']) {
            const r = await h.request(method, `${k.base}/${id}${k.query}`, { body: b, headers: { 'if-match': stale } });
            t.equal(r.status, 412, `${method} If-Match ${stale}`);
            t.equal(r.body.code, 'version_mismatch');
            t.equal(r.body.currentVersion, v);
          }
        }
        const after = await ok(h.request('GET', `${k.base}/${id}`), 200);
        t.same(after, cur, 'nothing changed');
        const auditAfter = await sql`select count(*)::int as n from audit_events where resource_id = ${id}`;
        t.equal(auditAfter[0].n, auditBefore[0].n, 'and nothing was audited');

        const r = await h.request('PATCH', `${k.base}/${id}${k.query}`, { body: { name: 'Matched' }, headers: { 'if-match': `"${v}"` } });
        t.equal(r.status, 200, 'current ETag: ok');
        t.equal(r.body.version, v + 1);
        const r2 = await h.request('PATCH', `${k.base}/${id}${k.query}`, { body: { name: 'Matched twice' }, headers: { 'if-match': r.headers.get('etag')! } });
        t.equal(r2.status, 200, 'the ETag sent back is usable as If-Match');
        const r3 = await h.request('PATCH', `${k.base}/${id}${k.query}`, { body: { name: 'Star' }, headers: { 'if-match': '*' } });
        t.equal(r3.status, 200, 'If-Match: * matches any');
      });

      t.test('PUT replaces, or creates by slug', async (t) => {
        const cur = await ok(h.request('GET', `${k.base}/${id}`), 200);
        const r = await h.request('PUT', `${k.base}/first${k.query}`, { body: k.replace() });
        t.equal(r.status, 200, 'PUT on an existing slug replaces');
        t.equal(r.body.id, id);
        t.equal(r.body.name, 'Replaced');
        t.equal(r.body.version, cur.version + 1);
        t.equal(r.headers.get('etag'), `"${cur.version + 1}"`);
        t.same(await ok(h.request('GET', `${k.base}/${id}`), 200), r.body);
        const byId = await h.request('PUT', `${k.base}/${id}${k.query}`, { body: { ...k.replace(), name: 'Replaced by id' } });
        t.equal(byId.status, 200, 'PUT by id');
        t.equal(byId.body.name, 'Replaced by id');

        const created = await h.request('PUT', `${k.base}/made-by-put${k.query}`, { body: k.replace() });
        t.equal(created.status, 201, 'PUT on an unknown slug creates');
        t.equal(created.body.slug, 'made-by-put');
        t.equal(created.body.version, 1);
        t.equal(created.headers.get('location'), `${k.base}/${created.body.id}`);
        t.equal(created.headers.get('etag'), '"1"');
        t.equal((await ok(h.request('GET', `${k.base}/made-by-put`), 200)).id, created.body.id);

        const same = await h.request('PUT', `${k.base}/made-by-put${k.query}`, { body: k.replace() });
        t.equal(same.status, 200, 'the same PUT again is not a create');
        t.equal(same.body.version, 1, 'and changes nothing');

        const unknownId = k.idPrefix.source.slice(1, k.idPrefix.source.indexOf('_') + 1) + '0'.repeat(26);
        const u = await h.request('PUT', `${k.base}/${unknownId}${k.query}`, { body: k.replace() });
        t.equal(u.status, 422, 'PUT on an unknown id cannot create');
        t.equal(u.body.code, 'not_found_for_put');

        const mismatch = await h.request('PUT', `${k.base}/another${k.query}`, { body: { ...k.replace(), slug: 'different' } });
        t.equal(mismatch.status, 422, 'body slug must equal the URL slug on create');
        t.equal(mismatch.body.code, 'slug_mismatch');
        t.equal((await h.request('GET', `${k.base}/another`)).status, 404);
        t.equal((await h.request('GET', `${k.base}/different`)).status, 404);

        for (const im of ['"1"', '"0"', '*']) {
          const condCreate = await h.request('PUT', `${k.base}/cond-create${k.query}`, { body: k.replace(), headers: { 'if-match': im } });
          t.equal(condCreate.status, 412, `If-Match ${im} on a resource that does not exist: 412`);
          t.equal(condCreate.body.code, 'version_mismatch');
        }
        t.equal((await h.request('GET', `${k.base}/cond-create`)).status, 404, 'nothing created');
        const starOnExisting = await h.request('PUT', `${k.base}/made-by-put${k.query}`, { body: { ...k.replace(), name: 'Star' }, headers: { 'if-match': '*' } });
        t.equal(starOnExisting.status, 200, 'If-Match * on an existing resource: ok');
      });

      t.test('DELETE', async (t) => {
        const made = await ok(h.request('POST', `${k.base}${k.query}`, { body: k.create('to-delete') }));
        const d = await h.request('DELETE', `${k.base}/to-delete`);
        t.equal(d.status, 204);
        t.equal(d.text, '');
        t.equal((await h.request('GET', `${k.base}/${made.id}`)).status, 404);
        const again = await h.request('DELETE', `${k.base}/${made.id}`);
        t.equal(again.status, 404);
        t.equal(again.body.code, 'not_found');
        const rows = await sql.unsafe(`select count(*)::int as n from ${k.table} where id = $1`, [made.id]);
        t.equal(rows[0].n, 0);
        const cond = await ok(h.request('POST', `${k.base}${k.query}`, { body: k.create('cond-delete') }));
        t.equal((await h.request('DELETE', `${k.base}/${cond.id}`, { headers: { 'if-match': '"1"' } })).status, 204, 'conditional delete with the current version');
      });
    });
  }

  t.test('connections: config is a JSON merge patch; secrets merge and null removes', async (t) => {
    const c = await ok(
      h.request('POST', '/v1/connections', { body: pgConnection('merge', { config: { host: 'h1', database: 'd1', user: 'u1', schema: 'crm', port: 6543 }, secrets: { password: 'pw-1' } }) }),
    );
    t.same(c.secretNames, ['password']);
    t.match(c.config, { host: 'h1', database: 'd1', user: 'u1', schema: 'crm', port: 6543, ssl: 'disable' });
    // A new host is a new place for the password: it must come with the change (secrets_required otherwise).
    const p = await ok(h.request('PATCH', '/v1/connections/merge', { body: { config: { host: 'h2', schema: null }, secrets: { password: 'pw-1' } } }), 200);
    t.match(p.config, { host: 'h2', database: 'd1', user: 'u1', port: 6543 }, 'merged, others kept');
    t.notOk('schema' in p.config, 'null removed the key');
    t.same(p.secretNames, ['password'], 'secrets untouched by a config patch');

    const bad = await h.request('PATCH', '/v1/connections/merge', { body: { config: { port: 'abc' } } });
    t.equal(bad.status, 400, 'the merged config is validated');
    t.same(bad.body.errors, [{ path: '/config/port', message: 'must be integer' }]);
    const removeRequired = await h.request('PATCH', '/v1/connections/merge', { body: { config: { host: null } } });
    t.equal(removeRequired.status, 400, 'removing a required key fails');
    t.equal(removeRequired.body.errors[0].path, '/config/host');
    t.equal((await ok(h.request('GET', '/v1/connections/merge'), 200)).version, p.version, 'failed patches changed nothing');

    const s = await ok(h.request('PATCH', '/v1/connections/merge', { body: { secrets: { password: null } } }), 200);
    t.same(s.secretNames, [], 'null removes a secret');
    const s2 = await ok(h.request('PATCH', '/v1/connections/merge', { body: { secrets: { password: { env: 'PG_PASSWORD' } } } }), 200);
    t.same(s2.secretNames, ['password']);
    const row = await sql`select secrets_sealed, secret_names from connections where id = ${c.id}`;
    t.ok(row[0].secrets_sealed, 'sealed value stored');
    t.same(row[0].secret_names, ['password']);

    const changeType = await h.request('PUT', '/v1/connections/merge', { body: httpConnection('merge') });
    t.equal(changeType.status, 422, 'a connection cannot change type');
    t.equal(changeType.body.code, 'immutable_field');

    // PUT without secrets keeps them (while they stay where they are sent); with secrets replaces the set.
    const samePlace = { host: 'h2', port: 6543, database: 'postgres', user: 'postgres' };
    const put1 = await ok(h.request('PUT', '/v1/connections/merge', { body: pgConnection('merge', { slug: undefined, config: samePlace }) }), 200);
    t.same(put1.secretNames, ['password'], 'PUT without secrets keeps them');
    t.same(put1.config, { ...samePlace, ssl: 'disable', statementTimeoutMs: 300000, allowCleartextPassword: false }, 'PUT replaces the whole config');
    const moved = await h.request('PUT', '/v1/connections/merge', { body: pgConnection('merge', { slug: undefined }) });
    t.equal(moved.body.code, 'secrets_required', 'a PUT that moves the secrets must send them');
    const put2 = await ok(h.request('PUT', '/v1/connections/merge', { body: pgConnection('merge', { slug: undefined, secrets: {} }) }), 200);
    t.same(put2.secretNames, [], 'PUT with secrets {} clears them');
  });

  t.test('syncs: PUT resets optional groups, PATCH keeps them', async (t) => {
    const s = await ok(
      h.request('POST', '/v1/syncs', {
        body: syncBody('groups', model.id, dst.id, {
          schedule: { type: 'cron', expression: '0 6 * * 1-5', timezone: 'Europe/Paris' },
          enabled: false,
          delivery: { batchSize: 10, maxRetries: 2 },
          alerts: { onFailure: false, rowFailurePercent: 5 },
        }),
      }),
    );
    t.same(s.schedule, { type: 'cron', expression: '0 6 * * 1-5', timezone: 'Europe/Paris' });
    t.same(s.delivery, { batchSize: 10, concurrency: 4, maxRequestsPerSecond: null, maxRetries: 2 });
    t.same(s.alerts, { channelIds: [], onFailure: false, rowFailurePercent: 5, maxDurationSeconds: null, consecutiveFailures: null });
    t.equal(s.modelId, model.id, 'references are stored as ids');
    t.equal(s.destinationId, dst.id);
    const p = await ok(h.request('PATCH', '/v1/syncs/groups', { body: { alerts: { rowFailurePercent: null } } }), 200);
    t.same(p.alerts, { ...s.alerts, rowFailurePercent: null });
    t.same(p.delivery, s.delivery);
    t.same(p.schedule, s.schedule);
    t.equal(p.enabled, false);
    const r = await ok(h.request('PUT', '/v1/syncs/groups', { body: syncBody('groups', model.slug, dst.slug) }), 200);
    t.same(r.schedule, { type: 'manual' });
    t.equal(r.enabled, true);
    t.same(r.delivery, { batchSize: 500, concurrency: 4, maxRequestsPerSecond: null, maxRetries: 6 });
    t.same(r.alerts, { channelIds: [], onFailure: true, rowFailurePercent: null, maxDurationSeconds: null, consecutiveFailures: null });
  });

  t.test('list filters', async (t) => {
    const byConn = await ok(h.request('GET', `/v1/models?connectionId=${src2.id}`), 200);
    t.ok(byConn.data.length >= 1);
    t.ok(byConn.data.every((m: { connectionId: string }) => m.connectionId === src2.id));
    const byType = await ok(h.request('GET', '/v1/connections?type=http'), 200);
    t.same(byType.data.map((c: { id: string }) => c.id), [dst.id]);
    const disabled = await ok(h.request('GET', '/v1/syncs?enabled=false'), 200);
    t.ok(disabled.data.every((s: { enabled: boolean }) => s.enabled === false));
  });

  void (h as TestBackhaul);
});
