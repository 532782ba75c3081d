import t from 'tap';
import { createHash } from 'node:crypto';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { controlDb, newKey, newWorkspace, ok, pgConnection, PROBLEM_TYPE } from '../helpers/http-fixtures.ts';

// Authentication (401) versus authorisation (403), scopes read < write < admin, and keys at rest.

t.test('auth', async (t) => {
  const h = await startTestBackhaul(t);
  const sql = controlDb(h);
  t.teardown(() => sql.end());

  t.test('401: missing, malformed, unknown or revoked key', async (t) => {
    const revoked = await newKey(h, ['admin']);
    t.equal((await h.request('GET', '/v1/connections', { token: revoked.token })).status, 200, 'the key works before it is revoked');
    t.equal((await h.request('DELETE', `/v1/api-keys/${revoked.id}`)).status, 204);

    const cases: [string, Record<string, string>][] = [
      ['missing', {}],
      ['not bearer', { authorization: `Basic ${Buffer.from('a:b').toString('base64')}` }],
      ['bearer without token', { authorization: 'Bearer' }],
      ['two tokens', { authorization: `Bearer ${h.token} extra` }],
      ['unknown bh_ key', { authorization: `Bearer bh_${'x'.repeat(43)}` }],
      ['not a bh_ key', { authorization: 'Bearer sk_live_123' }],
      ['over-long key', { authorization: `Bearer bh_${'y'.repeat(5000)}` }],
      ['revoked', { authorization: `Bearer ${revoked.token}` }],
    ];
    for (const [name, headers] of cases) {
      const r = await h.request('GET', '/v1/connections', { token: null, headers });
      t.equal(r.status, 401, name);
      t.equal(r.headers.get('content-type'), PROBLEM_TYPE, `${name}: problem+json`);
      t.equal(r.body.code, 'unauthorized', `${name}: code`);
    }
    // Writes too: nothing is created without a valid key.
    const w = await h.request('POST', '/v1/connections', { token: null, body: pgConnection('anon') });
    t.equal(w.status, 401);
    t.equal((await h.request('GET', '/v1/connections/anon')).status, 404);
  });

  t.test('public routes need no key', async (t) => {
    for (const p of ['/healthz', '/readyz', '/openapi.json']) {
      t.equal((await h.request('GET', p, { token: null })).status, 200, p);
    }
  });

  t.test('scopes: read < write < admin', async (t) => {
    const read = await newKey(h, ['read']);
    const write = await newKey(h, ['write']);
    const admin = await newKey(h, ['admin']);

    // read: can read, cannot write
    t.equal((await h.request('GET', '/v1/connections', { token: read.token })).status, 200);
    t.equal((await h.request('GET', '/v1/connectors', { token: read.token })).status, 200);
    t.equal((await h.request('GET', '/v1/audit-events', { token: read.token })).status, 200);
    const denied = await h.request('POST', '/v1/connections', { token: read.token, body: pgConnection('by-read') });
    t.equal(denied.status, 403);
    t.equal(denied.body.code, 'forbidden');
    t.equal(denied.headers.get('content-type'), PROBLEM_TYPE);
    t.equal((await h.request('GET', '/v1/connections/by-read')).status, 404, 'nothing was created by the read key');

    // write: can write connections, cannot manage keys
    const c = await ok(h.request('POST', '/v1/connections', { token: write.token, body: pgConnection('by-write') }));
    t.equal((await h.request('PATCH', `/v1/connections/${c.id}`, { token: read.token, body: { name: 'x' } })).status, 403, 'read cannot PATCH');
    t.equal((await h.request('PUT', `/v1/connections/${c.id}`, { token: read.token, body: pgConnection('by-write') })).status, 403, 'read cannot PUT');
    t.equal((await h.request('DELETE', `/v1/connections/${c.id}`, { token: read.token })).status, 403, 'read cannot DELETE');
    t.equal((await h.request('GET', `/v1/connections/${c.id}`)).status, 200, 'still there');
    for (const [m, p, body] of [
      ['GET', '/v1/api-keys', undefined],
      ['POST', '/v1/api-keys', { name: 'escalate', scopes: ['admin'] }],
      ['DELETE', `/v1/api-keys/${read.id}`, undefined],
    ] as const) {
      const r = await h.request(m, p, { token: write.token, body });
      t.equal(r.status, 403, `write key: ${m} ${p}`);
      t.equal(r.body.code, 'forbidden');
    }
    t.equal((await h.request('GET', '/v1/connections', { token: read.token })).status, 200, 'the read key was not revoked by the write key');
    const readKeyList = await h.request('GET', '/v1/api-keys', { token: read.token });
    t.equal(readKeyList.status, 403);

    // admin: everything in its workspace
    t.equal((await h.request('GET', '/v1/api-keys', { token: admin.token })).status, 200);
    const k = await ok(h.request('POST', '/v1/api-keys', { token: admin.token, body: { name: 'made by admin', scopes: ['read'] } }));
    t.match(k.token, /^bh_/);
    t.equal((await h.request('DELETE', `/v1/connections/${c.id}`, { token: admin.token })).status, 204, 'admin implies write');
  });

  t.test('workspaces: only an owner key', async (t) => {
    const admin = await newKey(h, ['admin']);
    const r1 = await h.request('POST', '/v1/workspaces', { token: admin.token, body: { slug: 'not-owner', name: 'x' } });
    t.equal(r1.status, 403, 'a non-owner admin key cannot create workspaces');
    t.equal(r1.body.code, 'forbidden');
    t.equal((await h.request('GET', '/v1/workspaces', { token: admin.token })).status, 403, 'nor list them');
    const list = await ok(h.request('GET', '/v1/workspaces'), 200);
    t.notOk(list.data.some((w: { slug: string }) => w.slug === 'not-owner'), 'nothing was created');

    // The admin key a new workspace gets is not an owner key either.
    const ws = await newWorkspace(h, 'second');
    t.equal((await h.request('POST', '/v1/workspaces', { token: ws.token, body: { slug: 'third', name: 'x' } })).status, 403);
  });

  t.test('keys are stored only as SHA-256 hashes', async (t) => {
    const k = await newKey(h, ['read']);
    const rows = await sql`select t::text as row, token_hash from api_keys t where id = ${k.id}`;
    t.equal(rows.length, 1);
    t.equal(rows[0].token_hash, createHash('sha256').update(k.token).digest('hex'));
    const secretPart = k.token.slice(10); // everything after the displayed prefix
    const all = await sql`select string_agg(t::text, '\n') as dump from api_keys t`;
    t.notOk(all[0].dump.includes(secretPart), 'no row contains the token');
    t.notOk(all[0].dump.includes(h.token.slice(10)), 'nor the bootstrap token');
    // listing keys never shows a token
    const list = await ok(h.request('GET', '/v1/api-keys'), 200);
    t.ok(list.data.length >= 2);
    t.notOk(JSON.stringify(list).includes(secretPart));
    t.ok(list.data.every((x: Record<string, unknown>) => !('token' in x)));
  });
});
