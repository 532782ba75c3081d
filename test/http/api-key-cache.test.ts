import t from 'tap';
import { randomBytes } from 'node:crypto';
import pino from 'pino';
import { startTestBackhaul, type TestBackhaul } from '../helpers/backhaul.ts';
import { controlDb, graph, newKey } from '../helpers/http-fixtures.ts';
import { insertApiKey } from '../../src/domain/api-keys.ts';
import { connectDatabase } from '../../src/db/client.ts';
import { createServices } from '../../src/domain/services.ts';
import { buildApp } from '../../src/http/app.ts';

// Authenticated keys are cached in each instance (a request then skips the database). A cached
// key must never outlive its revocation: at once on the instance that revoked it, within the
// notification latency on the others; scope changes announced with NOTIFY likewise, unannounced
// ones within the TTL; and a token the database did not know is never remembered.

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// The instances under test keep keys for an hour, so a change that shows within WAIT_MS came by
// notification, not by expiry: a generous wait (the machine may be loaded), never a latency limit.
const WAIT_MS = 30_000;
const HOUR = { ttlMs: 3_600_000 };

/** Polls until the key answers `status` on GET /v1/api-keys; the time it took, or -1 after `withinMs`. */
async function becomes(h: TestBackhaul, token: string, status: number, withinMs = WAIT_MS): Promise<number> {
  const t0 = Date.now();
  for (;;) {
    if ((await h.request('GET', '/v1/api-keys', { token })).status === status) return Date.now() - t0;
    if (Date.now() - t0 > withinMs) return -1;
    await sleep(20);
  }
}

t.test('api key cache', async (t) => {
  const a = await startTestBackhaul(t, { start: { apiKeyCache: HOUR } });
  // Same database, a TTL of an hour: only a notification can make it forget a key in time.
  const b = await startTestBackhaul(t, { env: { DATABASE_URL: a.databaseUrl }, start: { apiKeyCache: HOUR } });
  const sql = controlDb(a);
  t.teardown(() => sql.end());

  t.test('revocation: 401 at once on the same instance, promptly on another one', async (t) => {
    for (let i = 0; i < 5; i++) {
      const k = await newKey(a, ['admin']);
      // Cached on both instances.
      t.equal((await a.request('GET', '/v1/api-keys', { token: k.token })).status, 200);
      t.equal((await b.request('GET', '/v1/api-keys', { token: k.token })).status, 200);
      t.equal((await a.request('GET', '/v1/api-keys', { token: k.token })).status, 200);
      t.equal((await a.request('DELETE', `/v1/api-keys/${k.id}`)).status, 204);
      t.equal((await a.request('GET', '/v1/api-keys', { token: k.token })).status, 401, `revoked key ${i}: the next request on the same instance`);
      const took = await becomes(b, k.token, 401);
      t.ok(took >= 0, `revoked key ${i}: refused on the other instance by notification (took ${took} ms)`);
    }
  });

  t.test('revocation: the revoking instance forgets the key before answering, not on its own notification', async (t) => {
    // Straight after revoke() resolves, in the same turn of the event loop: the notification
    // this instance also gets has not been read yet.
    const admin = (await a.bh.services.apiKeys.authenticate(a.token))!;
    for (let i = 0; i < 10; i++) {
      const k = await newKey(a, ['read']);
      t.ok(await a.bh.services.apiKeys.authenticate(k.token), 'valid, and now cached');
      await a.bh.services.apiKeys.revoke(admin, k.id);
      t.equal(await a.bh.services.apiKeys.authenticate(k.token), null, `revoked key ${i}`);
    }
  });

  t.test('revocation through GraphQL reaches the other instance too', async (t) => {
    const k = await newKey(b, ['admin']);
    t.equal((await a.request('GET', '/v1/api-keys', { token: k.token })).status, 200);
    const r = await b.request('POST', '/graphql', { body: { query: 'mutation($id: ID!) { revokeApiKey(id: $id) { deletedId } }', variables: { id: k.id } } });
    t.equal(r.status, 200, r.text);
    t.notOk(r.body.errors, r.text);
    t.equal((await b.request('GET', '/v1/api-keys', { token: k.token })).status, 401, 'same instance');
    t.ok((await becomes(a, k.token, 401)) >= 0, 'other instance');
  });

  t.test('notifications missed while the listening connection was down: the cache starts afresh', async (t) => {
    const k = await newKey(a, ['admin']);
    t.equal((await b.request('GET', '/v1/api-keys', { token: k.token })).status, 200);
    // Kill the instances' LISTEN connections and revoke in the same transaction: its
    // notification is sent before they are back.
    await sql.begin(async (tx) => {
      const killed = await tx`select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database() and query ilike 'listen%'`;
      t.ok(killed.length >= 2, 'both instances were listening');
      await tx`update api_keys set revoked_at = now() where id = ${k.id}`;
      await tx`select pg_notify('backhaul_api_keys', ${k.id})`;
    });
    t.ok((await becomes(b, k.token, 401)) >= 0, 'refused once the instance listens again');
    // And notifications flow again afterwards.
    const k2 = await newKey(a, ['admin']);
    t.equal((await b.request('GET', '/v1/api-keys', { token: k2.token })).status, 200);
    t.equal((await a.request('DELETE', `/v1/api-keys/${k2.id}`)).status, 204);
    t.ok((await becomes(b, k2.token, 401)) >= 0, 'a later revocation reaches the other instance');
  });

  t.test('a scope change made by hand in SQL takes effect on every instance (the api_keys trigger announces it)', async (t) => {
    const k = await newKey(a, ['admin']);
    for (const h of [a, b]) t.equal((await h.request('GET', '/v1/api-keys', { token: k.token })).status, 200);
    await sql`update api_keys set scopes = '{read}' where id = ${k.id}`;
    for (const [name, h] of [['a', a], ['b', b]] as const) t.ok((await becomes(h, k.token, 403)) >= 0, `downgraded on ${name}`);
    t.equal((await a.request('GET', '/v1/connections', { token: k.token })).status, 200, 'read still allowed');

    // An empty payload forgets every key (the trigger off, so only that NOTIFY can do it).
    await sql`alter table api_keys disable trigger api_keys_changed`;
    t.teardown(() => sql`alter table api_keys enable trigger api_keys_changed`);
    await sql`update api_keys set scopes = '{admin}' where id = ${k.id}`;
    await sql`select pg_notify('backhaul_api_keys', '')`;
    for (const [name, h] of [['a', a], ['b', b]] as const) t.ok((await becomes(h, k.token, 200)) >= 0, `upgraded again on ${name}`);
    await sql`alter table api_keys enable trigger api_keys_changed`;
  });

  t.test('an unannounced change shows within the TTL', async (t) => {
    const c = await startTestBackhaul(t, { env: { DATABASE_URL: a.databaseUrl }, start: { apiKeyCache: { ttlMs: 300 } } });
    const k = await newKey(a, ['admin']);
    // Unannounced: the trigger off (as if notifications were lost).
    await sql`alter table api_keys disable trigger api_keys_changed`;
    t.teardown(() => sql`alter table api_keys enable trigger api_keys_changed`);
    t.equal((await c.request('GET', '/v1/api-keys', { token: k.token })).status, 200);
    await sql`update api_keys set scopes = '{read}' where id = ${k.id}`;
    const took = await becomes(c, k.token, 403);
    t.ok(took >= 0, `downgraded once the TTL ran out (took ${took} ms)`);
    await sql`update api_keys set revoked_at = now() where id = ${k.id}`;
    t.ok((await becomes(c, k.token, 401)) >= 0, 'revoked by hand: refused once the TTL ran out');
  });

  t.test('an unknown token is never cached as valid, nor as invalid', async (t) => {
    const token = `bh_${randomBytes(32).toString('base64url')}`;
    for (const h of [a, b]) {
      t.equal((await h.request('GET', '/v1/connections', { token })).status, 401);
      t.equal((await h.request('GET', '/v1/connections', { token })).status, 401, 'still unknown');
    }
    // `backhaul keys create` writes the key straight to the database, with no notification.
    const [ws] = await sql`select id from workspaces where slug = 'default'`;
    await insertApiKey(a.bh.database.db, ws.id, { name: 'made by the CLI', scopes: ['read'], token });
    for (const h of [a, b]) t.equal((await h.request('GET', '/v1/connections', { token })).status, 200, 'valid from its first request');
    // A token close to a valid one (same prefix, same length) is not taken for it.
    const near = token.slice(0, -1) + (token.endsWith('A') ? 'B' : 'A');
    t.equal((await a.request('GET', '/v1/connections', { token: near })).status, 401);
  });

  t.test('last_used_at is written at most once a minute per key', async (t) => {
    const k = await newKey(a, ['read']);
    t.equal((await a.request('GET', '/v1/connections', { token: k.token })).status, 200);
    let first: Date | null = null;
    for (let i = 0; i < 1500 && !first; i++) {
      first = (await sql`select last_used_at from api_keys where id = ${k.id}`)[0].last_used_at;
      if (!first) await sleep(20);
    }
    t.ok(first, 'recorded after the first request');
    for (let i = 0; i < 20; i++) t.equal((await a.request('GET', '/v1/connections', { token: k.token })).status, 200);
    // A write those requests made would be sent before the one a fresh key's first request makes:
    // once that one has landed, theirs would have too.
    const probe = await newKey(a, ['read']);
    t.equal((await a.request('GET', '/v1/connections', { token: probe.token })).status, 200);
    for (let i = 0; i < 1500 && !(await sql`select last_used_at from api_keys where id = ${probe.id}`)[0].last_used_at; i++) await sleep(20);
    const [after] = await sql`select last_used_at from api_keys where id = ${k.id}`;
    t.same(after.last_used_at, first, 'not rewritten by the following requests');
    const keys = await a.request('GET', '/v1/api-keys');
    t.ok(keys.body.data.find((x: { id: string }) => x.id === k.id).lastUsedAt, 'shown in the key list');
  });

  t.test('a read with a cached key costs one SQL statement', async (t) => {
    const { sync } = await graph(a, 'one-stmt');
    // An API over a pool that records what it sends.
    const statements: string[] = [];
    const database = connectDatabase(a.databaseUrl, { debug: (q) => statements.push(q) });
    const services = createServices({ ...a.bh.services.deps, database });
    const unlisten = await services.apiKeys.listen();
    const app = await buildApp({ config: a.bh.config, services, readiness: { checks: {} }, loggerInstance: pino({ level: 'silent' }) as never });
    const url = await app.listen({ host: '127.0.0.1', port: 0 });
    t.teardown(async () => {
      await app.close();
      await unlisten();
      await database.close();
    });
    const get = (path: string) => fetch(url + path, { headers: { authorization: `Bearer ${a.token}` } });
    t.equal((await get('/v1/syncs')).status, 200); // the key is looked up once
    // The key's last_used_at write (at most once a minute, proven above) goes out on its own
    // schedule: it is not part of a read's cost, so it is left out rather than waited for.
    const counted = () => statements.filter((q) => !/^update "api_keys" set "last_used_at"/i.test(q));
    for (const path of [`/v1/syncs/${sync.id}`, `/v1/syncs/${sync.slug}`, '/v1/syncs?limit=50']) {
      statements.length = 0;
      const r = await get(path);
      t.equal(r.status, 200, path);
      t.same(counted().length, 1, `${path}: ${JSON.stringify(statements)}`);
    }
  });
});
