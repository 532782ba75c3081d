import t from 'tap';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { controlDb, httpConnection, modelBody, ok, pgConnection, syncBody } from '../helpers/http-fixtures.ts';

// What a Terraform-style provider relies on (issue 16, item 10): conditional create with
// If-None-Match, PUT that never renames behind the path's back, slugs accepted and shown wherever
// a reference is, GET bodies that can be PUT back as they are, a trigger that says whether it
// made a run, and one validation error per wrong value.

t.test('provider semantics', async (t) => {
  const h = await startTestBackhaul(t);
  const sql = controlDb(h);
  t.teardown(() => sql.end());
  const src = await ok(h.request('POST', '/v1/connections', { body: pgConnection('pv-src') }));
  const dst = await ok(h.request('POST', '/v1/connections', { body: httpConnection('pv-dst') }));
  const model = await ok(h.request('POST', '/v1/models?validate=false', { body: modelBody('pv-model', src.id) }));

  const kinds: { base: string; query: string; body(slug: string): Record<string, unknown> }[] = [
    { base: '/v1/connections', query: '', body: (slug) => pgConnection(slug, { secrets: { password: 'pw' } }) },
    { base: '/v1/models', query: '?validate=false', body: (slug) => modelBody(slug, src.id) },
    { base: '/v1/syncs', query: '', body: (slug) => syncBody(slug, model.id, dst.id, { schedule: { type: 'cron', expression: '0 6 * * *' } }) },
    { base: '/v1/webhook-endpoints', query: '', body: (slug) => ({ slug, name: `Hook ${slug}`, url: 'http://127.0.0.1:9/hook', events: ['run.completed'] }) },
    { base: '/v1/alert-channels', query: '', body: (slug) => ({ slug, name: `Alerts ${slug}`, type: 'webhook', config: { url: 'http://127.0.0.1:9/alerts' } }) },
  ];
  const audits = async (id: string) => (await sql`select count(*)::int as n from audit_events where resource_id = ${id}`)[0].n as number;

  for (const k of kinds) {
    t.test(k.base, async (t) => {
      t.test('If-None-Match: * creates only', async (t) => {
        const made = await h.request('PUT', `${k.base}/inm${k.query}`, { body: k.body('inm'), headers: { 'if-none-match': '*' } });
        t.equal(made.status, 201, 'absent: created');
        const again = await h.request('PUT', `${k.base}/inm${k.query}`, { body: { ...k.body('inm'), name: 'Changed' }, headers: { 'if-none-match': '*' } });
        t.equal(again.status, 412, 'present: 412 (RFC 9110 §13.1.2)');
        t.equal(again.body.code, 'already_exists');
        t.equal(again.headers.get('content-type'), 'application/problem+json; charset=utf-8');
        const byId = await h.request('PUT', `${k.base}/${made.body.id}${k.query}`, { body: { ...k.body('inm'), name: 'Changed' }, headers: { 'if-none-match': '*' } });
        t.equal(byId.status, 412, 'by id too');
        const cur = await ok(h.request('GET', `${k.base}/inm`), 200);
        t.equal(cur.version, 1, 'nothing changed');
        t.not(cur.name, 'Changed');
        const etagMatch = await h.request('PUT', `${k.base}/inm${k.query}`, { body: { ...k.body('inm'), name: 'Changed' }, headers: { 'if-none-match': '"1"' } });
        t.equal(etagMatch.status, 412, 'If-None-Match with the current ETag: 412');
        const etagOther = await h.request('PUT', `${k.base}/inm${k.query}`, { body: { ...k.body('inm'), name: 'Changed' }, headers: { 'if-none-match': '"7"' } });
        t.equal(etagOther.status, 200, 'If-None-Match with another ETag: the write goes on');
      });

      t.test('a body slug that differs from the path is refused', async (t) => {
        await ok(h.request('PUT', `${k.base}/sm${k.query}`, { body: k.body('sm') }), 201);
        for (const path of ['sm', 'sm-new']) {
          const r = await h.request('PUT', `${k.base}/${path}${k.query}`, { body: { ...k.body('other') } });
          t.equal(r.status, 422, `PUT /${path} with slug "other"`);
          t.equal(r.body.code, 'slug_mismatch');
          t.same(r.body.errors, [{ path: '/slug', message: `must equal the slug in the URL ("${path}")` }]);
        }
        t.equal((await h.request('GET', `${k.base}/other`)).status, 404, 'nothing renamed or created');
        t.equal((await h.request('GET', `${k.base}/sm-new`)).status, 404);
        // Addressed by id, the body's slug is the resource's slug: a rename, as documented.
        const cur = await ok(h.request('GET', `${k.base}/sm`), 200);
        const moved = await h.request('PUT', `${k.base}/${cur.id}${k.query}`, { body: k.body('sm-moved') });
        t.equal(moved.status, 200);
        t.equal(moved.body.slug, 'sm-moved');
      });

      t.test('the GET body can be PUT back', async (t) => {
        const created = await ok(h.request('PUT', `${k.base}/rt${k.query}`, { body: k.body('rt') }), 201);
        const got = await h.request('GET', `${k.base}/rt`);
        const before = await audits(created.id);
        for (const path of ['rt', created.id]) {
          const r = await h.request('PUT', `${k.base}/${path}${k.query}`, { body: got.body });
          t.equal(r.status, 200, `PUT ${path} with the GET body: ${r.text}`);
          t.same(r.body, got.body, 'a no-op');
        }
        t.equal(await audits(created.id), before, 'no audit event');

        const withIfMatch = await h.request('PUT', `${k.base}/rt${k.query}`, { body: { ...got.body, name: 'Edited' }, headers: { 'if-match': got.headers.get('etag')! } });
        t.equal(withIfMatch.status, 200, 'an edit of the GET body, conditional on its ETag');
        t.equal(withIfMatch.body.name, 'Edited');
        t.equal(withIfMatch.body.version, got.body.version + 1);

        const stale = await h.request('PUT', `${k.base}/rt${k.query}`, { body: { ...got.body, name: 'Stale edit' } });
        t.equal(stale.status, 422, 'read-only fields that differ from the stored values: 422');
        t.equal(stale.body.code, 'read_only_field');
        t.match(stale.body.errors, [{ path: '/updatedAt' }, { path: '/version' }]);
        t.equal(stale.body.errors.length, 2, 'names exactly the fields that differ');
        const wrongId = await h.request('PUT', `${k.base}/rt${k.query}`, { body: { ...withIfMatch.body, id: `${created.id.split('_')[0]}_${'0'.repeat(26)}` } });
        t.equal(wrongId.status, 422);
        t.same(wrongId.body.errors.map((e: { path: string }) => e.path), ['/id']);
        t.equal((await ok(h.request('GET', `${k.base}/rt`), 200)).name, 'Edited', 'nothing half-applied');

        const onCreate = await h.request('PUT', `${k.base}/rt-copy${k.query}`, { body: { ...got.body, slug: 'rt-copy' } });
        t.equal(onCreate.status, 422, 'read-only fields cannot describe a resource that does not exist');
        t.equal(onCreate.body.code, 'read_only_field');
        t.equal((await h.request('GET', `${k.base}/rt-copy`)).status, 404);
      });
    });
  }

  t.test('a mapping GET body can be PUT back', async (t) => {
    const s = await ok(h.request('POST', '/v1/syncs', { body: syncBody('pv-maps', model.id, dst.id) }));
    const m = await ok(h.request('POST', `/v1/syncs/${s.id}/mappings`, { body: { destinationField: 'email', source: { column: 'email' } } }));
    const r = await h.request('PUT', `/v1/syncs/${s.id}/mappings/${m.id}`, { body: m });
    t.equal(r.status, 200, r.text);
    t.same(r.body, m);
    const bad = await h.request('PUT', `/v1/syncs/${s.id}/mappings/${m.id}`, { body: { ...m, version: 9 } });
    t.equal(bad.status, 422);
    t.equal(bad.body.code, 'read_only_field');
  });

  t.test('references: slugs accepted in list filters and shown beside ids', async (t) => {
    const s = await ok(h.request('POST', '/v1/syncs', { body: syncBody('pv-ref', model.slug, dst.slug) }));
    t.equal(s.modelId, model.id);
    t.equal(s.modelSlug, model.slug);
    t.equal(s.destinationId, dst.id);
    t.equal(s.destinationSlug, dst.slug);
    t.equal((await ok(h.request('GET', `/v1/models/${model.id}`), 200)).connectionSlug, src.slug);
    const listed = await ok(h.request('GET', '/v1/syncs?limit=200'), 200);
    t.ok(listed.data.every((x: { modelSlug?: string; destinationSlug?: string }) => x.modelSlug === model.slug && x.destinationSlug === dst.slug), 'lists show them too');

    for (const q of [`modelId=${model.slug}`, `modelId=${model.id}`, `destinationId=${dst.slug}`, `destinationId=${dst.id}`]) {
      const r = await ok(h.request('GET', `/v1/syncs?${q}&limit=200`), 200);
      t.ok(r.data.some((x: { id: string }) => x.id === s.id), `?${q} finds the sync`);
    }
    t.same((await ok(h.request('GET', '/v1/syncs?modelId=no-such-model'), 200)).data, [], 'an unknown slug: nothing');
    t.ok((await ok(h.request('GET', `/v1/models?connectionId=${src.slug}`), 200)).data.some((x: { id: string }) => x.id === model.id), '?connectionId= takes a slug');
    t.equal((await h.request('GET', `/v1/alerts?syncId=${s.slug}`)).status, 200, '?syncId= takes a slug');

    // A reference's slug follows a rename.
    await ok(h.request('PATCH', `/v1/models/${model.id}?validate=false`, { body: { slug: 'pv-model-renamed' } }), 200);
    t.equal((await ok(h.request('GET', `/v1/syncs/${s.id}`), 200)).modelSlug, 'pv-model-renamed');
    await ok(h.request('PATCH', `/v1/models/${model.id}?validate=false`, { body: { slug: model.slug } }), 200);

    // The slug beside a reference is read-only: it must agree with the reference it stands beside.
    const got = await ok(h.request('GET', `/v1/syncs/${s.id}`), 200);
    const disagree = await h.request('PUT', `/v1/syncs/${s.id}`, { body: { ...got, modelSlug: 'something-else' } });
    t.equal(disagree.status, 422);
    t.equal(disagree.body.code, 'read_only_field');
    t.same(disagree.body.errors.map((e: { path: string }) => e.path), ['/modelSlug']);
  });

  t.test('a trigger says whether it made a run', async (t) => {
    const s = await ok(h.request('POST', '/v1/syncs', { body: syncBody('pv-trigger', model.id, dst.id) }));
    const first = await h.request('POST', `/v1/syncs/${s.id}/runs`, { body: {} });
    t.equal(first.status, 202, `a new run: 202 ${first.text}`);
    t.equal(first.headers.get('backhaul-existing-run'), null);
    t.equal(first.headers.get('location'), `/v1/runs/${first.body.id}`);
    const second = await h.request('POST', `/v1/syncs/${s.id}/runs`, { body: {} });
    t.equal(second.status, 200, 'the queued run returned: 200');
    t.equal(second.headers.get('backhaul-existing-run'), 'true');
    t.equal(second.body.id, first.body.id);
  });

  t.test('one error per wrong value in a union', async (t) => {
    const s = await ok(h.request('POST', '/v1/syncs', { body: syncBody('pv-union', model.id, dst.id) }));
    const cases: [string, string, unknown, [string, RegExp][]][] = [
      ['POST', `/v1/syncs/${s.id}/mappings`, { destinationField: 'a', source: { column: 'x', static: 1 } }, [['/source', /exactly one of: column, static, template, lookup/]]],
      ['POST', `/v1/syncs/${s.id}/mappings`, { destinationField: 'a', source: {} }, [['/source', /exactly one of: column, static, template, lookup/]]],
      ['POST', `/v1/syncs/${s.id}/mappings`, { destinationField: 'a', source: { column: '' } }, [['/source/column', /fewer than 1/]]],
      [
        'POST',
        `/v1/syncs/${s.id}/mappings`,
        { destinationField: 'a', source: { lookup: { object: 'x' } } },
        [
          ['/source/lookup/matchField', /required/],
          ['/source/lookup/sourceColumn', /required/],
          ['/source/lookup/resultField', /required/],
        ],
      ],
      ['PATCH', `/v1/syncs/${s.id}`, { schedule: { type: 'interval', everySeconds: 5 } }, [['/schedule/everySeconds', />= 10/]]],
      ['PATCH', `/v1/syncs/${s.id}`, { schedule: { type: 'cron' } }, [['/schedule/expression', /required/]]],
      ['PATCH', `/v1/syncs/${s.id}`, { schedule: { type: 'hourly' } }, [['/schedule/type', /one of: "manual", "interval", "cron"/]]],
      ['PATCH', `/v1/syncs/${s.id}`, { mode: 'sideways' }, [['/mode', /one of: "insert", "update", "upsert", "mirror"/]]],
      ['PATCH', `/v1/syncs/${s.id}`, { delivery: { maxRequestsPerSecond: 'fast' } }, [['/delivery/maxRequestsPerSecond', /must be number or null/]]],
      ['PUT', `/v1/syncs/${s.id}/mappings`, [{ destinationField: 'a', source: { template: 1 } }], [['/0/source/template', /must be string/]]],
    ];
    for (const [method, path, body, want] of cases) {
      const r = await h.request(method, path, { body });
      t.equal(r.status, 400, `${JSON.stringify(body)}`);
      t.same(
        (r.body.errors ?? []).map((e: { path: string }) => e.path),
        want.map(([p]) => p),
        `the errors of the relevant branch only: ${JSON.stringify(r.body.errors)}`,
      );
      want.forEach(([, m], i) => t.match(r.body.errors?.[i]?.message, m));
    }
  });
});
