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

// Issue 13, finding 1: a stored response is replayed only to the API key that made the request,
// never to a key with other (lower) scopes, and responses carrying a secret shown once (API key
// tokens, whsec_ secrets, a workspace's first key) are not stored in clear.
t.test('idempotency never escalates a key nor keeps secrets shown once', async (t) => {
  const h = await startTestBackhaul(t);
  const sql = controlDb(h);
  t.teardown(() => sql.end());
  const reader = await ok(h.request('POST', '/v1/api-keys', { body: { name: 'reader', scopes: ['read'] } }));
  const writer = await ok(h.request('POST', '/v1/api-keys', { body: { name: 'writer', scopes: ['write'] } }));
  const TOKEN = /bh_[A-Za-z0-9_-]{20,}/;
  const WHSEC = /whsec_[A-Za-z0-9+/=]{20,}/;
  const stored = async () => (await sql`select response_body from idempotency_keys where response_body is not null`).map((r) => r.response_body as string).join('\n');

  t.test('REST: a read key repeating an admin request (same key, same body) is refused, never replayed', async (t) => {
    const headers = { 'idempotency-key': 'mint-admin' };
    const body = { name: 'minted', scopes: ['admin'] };
    const first = await h.request('POST', '/v1/api-keys', { body, headers });
    t.equal(first.status, 201);
    t.match(first.body.token, TOKEN);
    const stolen = await h.request('POST', '/v1/api-keys', { body, headers, token: reader.token });
    t.equal(stolen.status, 403, 'the read key gets its own answer: forbidden');
    t.equal(stolen.body.code, 'forbidden');
    t.equal(stolen.headers.get('idempotent-replayed'), null);
    t.notMatch(stolen.text, TOKEN, 'no token in the answer');
    t.notOk(stolen.text.includes(first.body.token));
    // The same key (an admin) is no longer given the token either: it was shown once.
    const again = await h.request('POST', '/v1/api-keys', { body, headers });
    t.equal(again.status, 409);
    t.equal(again.body.code, 'secret_already_issued');
    t.match(again.headers.get('content-type'), /^application\/problem\+json/);
    t.equal(again.headers.get('idempotent-replayed'), 'true');
    t.notOk(again.text.includes(first.body.token), 'the replay does not carry the token');
    t.equal(again.body.resourceId, first.body.id, 'names what the first request created');
    const keys = await ok(h.request('GET', '/v1/api-keys'), 200);
    t.equal(keys.data.filter((k: { name: string }) => k.name === 'minted').length, 1, 'one key was minted');
  });

  t.test('REST: another key with the same Idempotency-Key and body is a different request', async (t) => {
    const headers = { 'idempotency-key': 'conn-by-admin' };
    const first = await ok(h.request('POST', '/v1/connections', { body: pgConnection('by-admin'), headers }));
    const other = await h.request('POST', '/v1/connections', { body: pgConnection('by-admin'), headers, token: writer.token });
    t.equal(other.headers.get('idempotent-replayed'), null, "the admin's answer is not replayed to the write key");
    t.equal(other.status, 409, 'executed on its own: the slug is taken');
    t.equal(other.body.code, 'slug_taken');
    const mine = await h.request('POST', '/v1/connections', { body: pgConnection('by-admin'), headers });
    t.equal(mine.headers.get('idempotent-replayed'), 'true');
    t.equal(mine.body.id, first.id);
  });

  t.test('REST: a key downscoped since its request is not replayed what it may no longer do', async (t) => {
    const admin2 = await ok(h.request('POST', '/v1/api-keys', { body: { name: 'admin2', scopes: ['admin'] } }));
    const headers = { 'idempotency-key': 'before-downscope' };
    const first = await ok(h.request('POST', '/v1/connections', { body: pgConnection('before-downscope'), headers, token: admin2.token }));
    t.ok(first.id);
    await sql`update api_keys set scopes = '{read}' where id = ${admin2.id}`;
    let r = await h.request('POST', '/v1/connections', { body: pgConnection('before-downscope'), headers, token: admin2.token });
    // The key cache hears the change through NOTIFY: wait for it, not for a fixed time.
    for (let i = 0; i < 100 && r.status !== 403; i++) {
      await new Promise((res) => setTimeout(res, 50));
      r = await h.request('POST', '/v1/connections', { body: pgConnection('before-downscope'), headers, token: admin2.token });
    }
    t.equal(r.status, 403);
    t.equal(r.body.code, 'forbidden');
    t.equal(r.headers.get('idempotent-replayed'), null);
  });

  t.test('REST: webhook, callback and workspace secrets are not stored and not replayed', async (t) => {
    const wh = { slug: 'hook', name: 'Hook', url: 'http://127.0.0.1:9/hook', events: ['run.completed'] };
    const a = await h.request('POST', '/v1/webhook-endpoints', { body: wh, headers: { 'idempotency-key': 'wh-1' } });
    t.equal(a.status, 201, a.text);
    t.match(a.body.secret, WHSEC);
    const b = await h.request('POST', '/v1/webhook-endpoints', { body: wh, headers: { 'idempotency-key': 'wh-1' } });
    t.equal(b.status, 409);
    t.equal(b.body.code, 'secret_already_issued');
    t.notOk(b.text.includes(a.body.secret));
    t.equal(b.headers.get('location'), a.headers.get('location'), 'Location of the created endpoint');

    const c = await h.request('POST', '/v1/callback-secret', { body: {}, headers: { 'idempotency-key': 'cb-1' } });
    t.equal(c.status, 200, c.text);
    t.match(c.body.secret, WHSEC);
    const d = await h.request('POST', '/v1/callback-secret', { body: {}, headers: { 'idempotency-key': 'cb-1' } });
    t.equal(d.body.code, 'secret_already_issued');

    const w = await h.request('POST', '/v1/workspaces', { body: { slug: 'idem-ws', name: 'Idem' }, headers: { 'idempotency-key': 'ws-1' } });
    t.equal(w.status, 201, w.text);
    t.match(w.body.apiKey.token, TOKEN);
    const w2 = await h.request('POST', '/v1/workspaces', { body: { slug: 'idem-ws', name: 'Idem' }, headers: { 'idempotency-key': 'ws-1' } });
    t.equal(w2.status, 409);
    t.equal(w2.body.code, 'secret_already_issued');
    t.notOk(w2.text.includes(w.body.apiKey.token));

    const all = await stored();
    t.notMatch(all, TOKEN, 'no API token is stored in clear');
    t.notMatch(all, WHSEC, 'no whsec_ secret is stored in clear');
  });

  t.test('GraphQL: createApiKey is replayed neither to a read key nor, with its token, at all', async (t) => {
    const mutation = 'mutation($n: String!) { createApiKey(input: { name: $n, scopes: [admin] }) { apiKey { id } token } }';
    const gql = (token: string) =>
      fetch(`${h.url}/graphql`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'idempotency-key': 'gql-mint' },
        body: JSON.stringify({ query: mutation, variables: { n: 'gql-minted' } }),
      }).then(async (r) => ({ status: r.status, headers: r.headers, text: await r.text() }));
    const first = await gql(h.token);
    t.equal(first.status, 200, first.text);
    const token = JSON.parse(first.text).data.createApiKey.token as string;
    t.match(token, TOKEN);
    const stolen = await gql(reader.token);
    t.equal(stolen.headers.get('idempotent-replayed'), null);
    t.notOk(stolen.text.includes(token), 'the read key does not get the token');
    t.equal(JSON.parse(stolen.text).errors?.[0]?.extensions?.code, 'forbidden');
    const again = await gql(h.token);
    t.notOk(again.text.includes(token), 'nor does the admin, a second time');
    t.equal(again.status, 409);
    t.match(again.text, /secret_already_issued/);
    t.notMatch(await stored(), TOKEN);
  });
});
