import t from 'tap';
import postgres from 'postgres';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { startFakeCrm } from '../fakes/crm.ts';
import { setupSync, waitForRun } from '../helpers/sync-setup.ts';
import { engine, env, sleep } from './helpers.ts';

// Load: 50 concurrent clients create, update (with If-Match) and trigger syncs for
// CHAOS_LOAD_SECONDS while the runs execute. No answer other than 2xx, 409 or 412; no deadlock;
// no lost update (two updates accepted against the same version of a sync); every run ends
// succeeded.

const SECONDS = env('CHAOS_LOAD_SECONDS', 20);
const CLIENTS = env('CHAOS_LOAD_CLIENTS', 50);

t.test(`${CLIENTS} clients for ${SECONDS} s`, async (t) => {
  const h = await startTestBackhaul(t, { start: { worker: true, engine } });
  const crm = await startFakeCrm({ delayMs: 2 });
  t.teardown(() => crm.close());
  const base = await setupSync(t, h, crm.url, { rows: 200, delivery: { batchSize: 50, concurrency: 2 } });
  const first = (await h.request('GET', `/v1/syncs/${base.syncId}`)).body;
  const db = postgres(h.databaseUrl, { max: 1, onnotice: () => {} });
  t.teardown(() => db.end());
  const [{ deadlocks: deadlocksBefore }] = await db`select deadlocks::int from pg_stat_database where datname = current_database()`;

  const syncs: string[] = [base.syncId];
  const runIds = new Set<string>();
  const unexpected: string[] = [];
  const statuses = new Map<string, number>();
  /** Accepted updates: sync → versions they were based on (a version accepted twice is a lost update). */
  const accepted = new Map<string, { base: string; name: string }[]>();
  const deadline = Date.now() + SECONDS * 1000;
  let n = 0;

  const note = (what: string, status: number, text: string) => {
    statuses.set(`${what} ${status}`, (statuses.get(`${what} ${status}`) ?? 0) + 1);
    if (!(status < 300 || status === 409 || status === 412)) unexpected.push(`${what} → ${status} ${text.slice(0, 200)}`);
  };

  async function client(c: number): Promise<void> {
    while (Date.now() < deadline) {
      const pick = syncs[Math.floor(Math.random() * syncs.length)];
      const action = Math.random();
      if (action < 0.15) {
        const slug = `load-${c}-${n++}`;
        const r = await h.request('POST', '/v1/syncs', {
          body: { slug, name: slug, modelId: first.modelId, destinationId: first.destinationId, object: 'contacts', mode: 'upsert', matchKey: first.matchKey, delivery: { batchSize: 100, concurrency: 1 } },
        });
        note('create', r.status, r.text);
        if (r.status === 201) syncs.push(r.body.id);
      } else if (action < 0.6) {
        const g = await h.request('GET', `/v1/syncs/${pick}`);
        note('get', g.status, g.text);
        const etag = g.headers.get('etag');
        if (g.status !== 200 || !etag) continue;
        const name = `client ${c} update ${n++}`;
        const r = await h.request('PATCH', `/v1/syncs/${pick}`, { body: { name }, headers: { 'if-match': etag } });
        note('update', r.status, r.text);
        if (r.status === 200) {
          const list = accepted.get(pick) ?? [];
          list.push({ base: etag, name });
          accepted.set(pick, list);
        }
      } else {
        const r = await h.request('POST', `/v1/syncs/${pick}/runs`, { body: {} });
        note('trigger', r.status, r.text);
        if (r.status === 202) runIds.add(r.body.id);
      }
    }
  }
  await Promise.all(Array.from({ length: CLIENTS }, (_, c) => client(c)));
  t.same(unexpected.slice(0, 10), [], `only 2xx, 409 and 412 answers: ${JSON.stringify(Object.fromEntries([...statuses].sort()))}`);
  const errors = [...new Set(h.logs.filter((l) => /"level":50/.test(l)).map((l) => JSON.parse(l).err?.message ?? JSON.parse(l).msg))];
  if (unexpected.length) t.comment(`server errors logged: ${JSON.stringify(errors.slice(0, 10))}`);

  // No lost updates: no version accepted twice, and each sync shows its last accepted update.
  const lost: string[] = [];
  for (const [id, list] of accepted) {
    const bases = list.map((u) => u.base);
    if (new Set(bases).size !== bases.length) lost.push(`${id}: two updates accepted against one version`);
    const now = await h.request('GET', `/v1/syncs/${id}`);
    if (now.body.name !== list[list.length - 1].name) lost.push(`${id}: shows "${now.body.name}", last accepted "${list[list.length - 1].name}"`);
  }
  t.same(lost.slice(0, 5), [], `no lost update (${[...accepted.values()].reduce((a, l) => a + l.length, 0)} updates accepted on ${accepted.size} syncs)`);

  // Every run triggered ends, and succeeds.
  const runs = [];
  for (const id of runIds) runs.push(await waitForRun(h, id, 300_000));
  const bad = runs.filter((r) => r.status !== 'succeeded').map((r) => `${r.id} ${r.status} ${JSON.stringify(r.error)}`);
  t.same(bad.slice(0, 5), [], `all ${runs.length} runs succeeded`);
  const [{ deadlocks }] = await db`select deadlocks::int from pg_stat_database where datname = current_database()`;
  t.equal(deadlocks - deadlocksBefore, 0, 'no deadlock in the database');
  t.equal((await h.request('GET', '/readyz', { token: null })).status, 200, 'the server is still ready');
  await sleep(10);
});
