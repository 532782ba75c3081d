import t from 'tap';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { controlDb, newWorkspace, ok, pgConnection } from '../helpers/http-fixtures.ts';

// Idempotency-Key on POST: replays, key reuse with another body, a real concurrent race, and
// keys scoped to their workspace.

t.test('idempotency', async (t) => {
  const h = await startTestBackhaul(t);
  const sql = controlDb(h);
  t.teardown(() => sql.end());
  const countSlug = async (slug: string) => (await sql`select count(*)::int as n from connections where slug = ${slug}`)[0].n as number;

  t.test('a replay returns the first response and creates nothing new', async (t) => {
    const headers = { 'idempotency-key': 'create-once' };
    const first = await h.request('POST', '/v1/connections', { body: pgConnection('once'), headers });
    t.equal(first.status, 201);
    t.equal(first.headers.get('idempotent-replayed'), null, 'the first answer is not a replay');
    // Same body with other key order and whitespace is the same request.
    const body = pgConnection('once');
    const reordered = JSON.stringify({ config: body.config, type: body.type, name: body.name, slug: body.slug }, null, 2);
    const second = await h.request('POST', '/v1/connections', { rawBody: reordered, headers: { ...headers, 'content-type': 'application/json' } });
    t.equal(second.status, 201);
    t.equal(second.headers.get('idempotent-replayed'), 'true');
    t.equal(second.text, first.text, 'same body, byte for byte');
    t.equal(second.headers.get('location'), first.headers.get('location'));
    t.equal(second.headers.get('etag'), first.headers.get('etag'));
    t.match(second.headers.get('content-type'), /^application\/json/);
    t.equal(await countSlug('once'), 1);
    const audits = await sql`select count(*)::int as n from audit_events where resource_id = ${first.body.id}`;
    t.equal(audits[0].n, 1, 'one audit event');
    // Without the key, the same body is a new request (and a slug conflict).
    t.equal((await h.request('POST', '/v1/connections', { body: pgConnection('once') })).status, 409);
  });

  t.test('error answers are replayed too (a 4xx is a result)', async (t) => {
    const headers = { 'idempotency-key': 'bad-request' };
    const bad = { ...pgConnection('bad-one'), config: { host: 'h' } };
    const a = await h.request('POST', '/v1/connections', { body: bad, headers });
    const b = await h.request('POST', '/v1/connections', { body: bad, headers });
    t.equal(a.status, 400);
    t.equal(b.status, 400);
    t.equal(b.headers.get('idempotent-replayed'), 'true');
    t.same(b.body, a.body);
    t.match(b.headers.get('content-type'), /^application\/problem\+json/);
  });

  t.test('same key, different body: 422 idempotency_key_reused', async (t) => {
    const headers = { 'idempotency-key': 'reuse-me' };
    await ok(h.request('POST', '/v1/connections', { body: pgConnection('reuse-a'), headers }));
    const r = await h.request('POST', '/v1/connections', { body: pgConnection('reuse-b'), headers });
    t.equal(r.status, 422);
    t.equal(r.body.code, 'idempotency_key_reused');
    t.match(r.headers.get('content-type'), /^application\/problem\+json/);
    t.equal(await countSlug('reuse-b'), 0, 'the second body was not applied');
    // ... also on another route
    const r2 = await h.request('POST', '/v1/api-keys', { body: { name: 'x', scopes: ['read'] }, headers });
    t.equal(r2.status, 422, 'a key is for one request, whatever the route');
    const keys = await ok(h.request('GET', '/v1/api-keys'), 200);
    t.notOk(keys.data.some((k: { name: string }) => k.name === 'x'));
  });

  t.test('invalid keys', async (t) => {
    const r = await h.request('POST', '/v1/connections', { body: pgConnection('long-key'), headers: { 'idempotency-key': 'k'.repeat(256) } });
    t.equal(r.status, 400);
    t.equal(await countSlug('long-key'), 0);
  });

  t.test('a concurrent race creates exactly one resource', async (t) => {
    for (const round of [1, 2, 3]) {
      const slug = `race-${round}`;
      const headers = { 'idempotency-key': `race-key-${round}` };
      const results = await Promise.all(Array.from({ length: 10 }, () => h.request('POST', '/v1/connections', { body: pgConnection(slug), headers })));
      const statuses = results.map((r) => r.status);
      t.equal(await countSlug(slug), 1, `round ${round}: one connection (${statuses.join(',')})`);
      const created = results.filter((r) => r.status === 201);
      t.ok(created.length >= 1, 'at least one 201');
      t.equal(new Set(created.map((r) => r.body.id)).size, 1, 'every 201 is the same resource');
      t.equal(created.filter((r) => r.headers.get('idempotent-replayed') !== 'true').length, 1, 'exactly one original, the rest replays');
      for (const r of results) {
        if (r.status === 201) continue;
        t.equal(r.status, 409, 'others: 409');
        t.equal(r.body.code, 'idempotency_in_progress');
      }
      const audits = await sql`select count(*)::int as n from audit_events where resource_id = ${created[0].body.id}`;
      t.equal(audits[0].n, 1);
    }
  });

  t.test('keys are per workspace', async (t) => {
    const ws = await newWorkspace(h, 'other');
    const headers = { 'idempotency-key': 'shared-key' };
    const a = await ok(h.request('POST', '/v1/connections', { body: pgConnection('per-ws'), headers }));
    const b = await h.request('POST', '/v1/connections', { body: pgConnection('per-ws'), headers, token: ws.token });
    t.equal(b.status, 201);
    t.equal(b.headers.get('idempotent-replayed'), null, "another workspace's key does not replay");
    t.not(b.body.id, a.id);
    // and with another body, no 422 either
    const c = await h.request('POST', '/v1/connections', { body: pgConnection('per-ws-2'), headers: { 'idempotency-key': 'shared-key-2' }, token: ws.token });
    const d = await h.request('POST', '/v1/connections', { body: pgConnection('per-ws-3'), headers: { 'idempotency-key': 'shared-key-2' } });
    t.equal(c.status, 201);
    t.equal(d.status, 201);
  });

  t.test('unauthenticated and non-POST requests do not claim keys', async (t) => {
    const headers = { 'idempotency-key': 'anon-key' };
    t.equal((await h.request('POST', '/v1/connections', { body: pgConnection('anon'), headers, token: null })).status, 401);
    const r = await h.request('POST', '/v1/connections', { body: pgConnection('anon'), headers });
    t.equal(r.status, 201);
    t.equal(r.headers.get('idempotent-replayed'), null);
  });
});
