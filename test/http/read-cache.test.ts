import t from 'tap';
import { startTestBackhaul, type TestBackhaul } from '../helpers/backhaul.ts';
import { controlDb, graph, newWorkspace, ok } from '../helpers/http-fixtures.ts';

// Reads of syncs are cached by each API instance (src/domain/read-cache.ts). A client must always
// read its own writes on the instance it wrote through; another instance follows by notification
// (a change made by hand in the database too); a lost notification is bounded by the TTL; and a
// cached answer never crosses workspaces.

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
// The instances keep answers for an hour, so a change that shows within WAIT_MS came by
// notification, not by expiry: a generous wait (the machine may be loaded), never a latency limit.
const WAIT_MS = 30_000;
const HOUR = { ttlMs: 3_600_000 };

/** Polls GET path on h until pred holds; the time it took, or -1 after `withinMs`. */
async function becomes(h: TestBackhaul, path: string, pred: (body: any) => boolean, withinMs = WAIT_MS): Promise<number> {
  const t0 = Date.now();
  for (;;) {
    const r = await h.request('GET', path);
    if (pred(r.body)) return Date.now() - t0;
    if (Date.now() - t0 > withinMs) return -1;
    await sleep(20);
  }
}

t.test('sync read cache', async (t) => {
  const a = await startTestBackhaul(t, { start: { readCache: HOUR } });
  const b = await startTestBackhaul(t, { env: { DATABASE_URL: a.databaseUrl }, start: { readCache: HOUR } });
  const sql = controlDb(a);
  t.teardown(() => sql.end());
  const g = await graph(a, 'rc');
  const one = `/v1/syncs/${g.sync.id}`;
  const bySlug = `/v1/syncs/${g.sync.slug}`;

  t.test('the instance written through answers its own writes at once', async (t) => {
    for (let i = 0; i < 5; i++) {
      // Cached (read twice: the second answer comes from memory).
      for (const p of [one, bySlug, '/v1/syncs?limit=50']) {
        await ok(a.request('GET', p), 200);
        await ok(a.request('GET', p), 200);
      }
      const name = `Renamed ${i}`;
      const patched = await ok(a.request('PATCH', one, { body: { name } }), 200);
      const got = await ok(a.request('GET', one), 200);
      t.equal(got.name, name, `PATCH ${i}: the next GET by id sees it`);
      t.equal(got.version, patched.version, 'and its version');
      t.equal((await a.request('GET', one)).headers.get('etag'), `"${patched.version}"`, 'the ETag too');
      t.equal((await ok(a.request('GET', bySlug), 200)).name, name, 'by slug too');
      const list = await ok(a.request('GET', '/v1/syncs?limit=50'), 200);
      t.equal(list.data.find((s: { id: string }) => s.id === g.sync.id)?.name, name, 'and in the list');
    }
    // A change made through another resource: replacing the mappings bumps the sync's version.
    const before = await ok(a.request('GET', one), 200);
    const put = await a.request('PUT', `${one}/mappings`, { body: [{ destinationField: 'email', source: { column: 'email' } }] });
    t.equal(put.status, 200);
    t.equal((await ok(a.request('GET', one), 200)).version, put.body.syncVersion, 'mappings replaced: the new version at once');
    t.not(put.body.syncVersion, before.version);
    // The model's slug is part of the sync's view.
    await ok(a.request('GET', one), 200);
    await ok(a.request('PATCH', `/v1/models/${g.model.id}`, { body: { slug: 'rc-model-2' } }), 200);
    t.equal((await ok(a.request('GET', one), 200)).modelSlug, 'rc-model-2', "the model's new slug at once");
    // Deleted: 404 at once.
    const extra = await graph(a, 'rc-del');
    await ok(a.request('GET', `/v1/syncs/${extra.sync.id}`), 200);
    t.equal((await a.request('DELETE', `/v1/syncs/${extra.sync.id}`)).status, 204);
    t.equal((await a.request('GET', `/v1/syncs/${extra.sync.id}`)).status, 404, 'deleted: 404 on the next GET');
    // GraphQL mutations are writes too.
    await ok(a.request('GET', one), 200);
    const m = await a.request('POST', '/graphql', {
      body: { query: `mutation { updateSync(ref: "${g.sync.id}", input: { name: "By GraphQL" }) { name } }` },
    });
    t.equal(m.status, 200, m.text.slice(0, 300));
    t.notOk(m.body.errors, 'the mutation applied');
    t.equal((await ok(a.request('GET', one), 200)).name, 'By GraphQL', 'a GraphQL mutation: seen at once');
  });

  t.test('another instance follows by notification', async (t) => {
    for (let i = 0; i < 3; i++) {
      await ok(b.request('GET', one), 200);
      await ok(b.request('GET', '/v1/syncs?limit=50'), 200);
      const name = `Elsewhere ${i}`;
      await ok(a.request('PATCH', one, { body: { name } }), 200);
      t.ok((await becomes(b, one, (s) => s.name === name)) >= 0, `PATCH ${i} on a: seen on b by notification`);
      t.ok((await becomes(b, '/v1/syncs?limit=50', (l) => l.data?.some((s: { name: string }) => s.name === name))) >= 0, 'and in its list');
    }
    // A change by hand in the database (the trigger announces it).
    await ok(b.request('GET', one), 200);
    await sql`update syncs set name = 'By hand', version = version + 1 where id = ${g.sync.id}`;
    for (const [n, h] of [['a', a], ['b', b]] as const) t.ok((await becomes(h, one, (s) => s.name === 'By hand')) >= 0, `a change by hand: seen on ${n}`);
    // A connection's slug changed by hand.
    await sql`update connections set slug = 'rc-dst-2' where id = ${g.dst.id}`;
    t.ok((await becomes(b, one, (s) => s.destinationSlug === 'rc-dst-2')) >= 0, "the destination's new slug: seen on b");
  });

  t.test('a lost notification shows within the TTL', async (t) => {
    const c = await startTestBackhaul(t, { env: { DATABASE_URL: a.databaseUrl }, start: { readCache: { ttlMs: 300 } } });
    await ok(c.request('GET', one), 200);
    await sql`alter table syncs disable trigger syncs_changed`;
    t.teardown(() => sql`alter table syncs enable trigger syncs_changed`);
    await sql`update syncs set name = 'Unannounced', version = version + 1 where id = ${g.sync.id}`;
    t.ok((await becomes(c, one, (s) => s.name === 'Unannounced')) >= 0, 'seen once the TTL ran out');
    await sql`alter table syncs enable trigger syncs_changed`;
  });

  t.test('a cached answer never crosses workspaces', async (t) => {
    const other = await newWorkspace(a, 'rc-other');
    for (let i = 0; i < 2; i++) {
      t.equal((await a.request('GET', one)).status, 200, 'cached for its workspace');
      t.equal((await a.request('GET', one, { token: other.token })).status, 404, "another workspace's key: 404");
      t.equal((await a.request('GET', bySlug, { token: other.token })).status, 404, 'by slug too');
      const list = await ok(a.request('GET', '/v1/syncs?limit=50', { token: other.token }), 200);
      t.same(list.data, [], 'its own (empty) list');
    }
    t.equal((await a.request('GET', one, { token: 'bh_unknown' })).status, 401, 'no key: 401, whatever is cached');
  });
});
