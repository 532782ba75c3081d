import type { ChildProcess } from 'node:child_process';
import t from 'tap';
import postgres from 'postgres';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { startFakeCrm } from '../fakes/crm.ts';
import { seedPeople, setupSync, waitForRun } from '../helpers/sync-setup.ts';
import { env, kill9, releaseDeadWorkers, spawnWorker } from './helpers.ts';

// kill -9 of worker processes at random points (any phase: querying, diffing, delivering) in
// three consecutive runs of one sync, each followed by a restart. After every run: the
// destination equals the model, every planned row has one record, and no row acknowledged
// (checkpointed) before a kill was sent again.

const ROWS = env('CHAOS_KILL_ROWS', 3000);
const BATCH = 50;
const CONCURRENCY = 2;
const seed = env('CHAOS_SEED', Date.now() % 100_000);
let state = seed;
const rand = () => {
  state = (state * 1103515245 + 12345) & 0x7fffffff;
  return state / 0x7fffffff;
};

t.test(`kill -9 at random points in three consecutive runs (seed ${seed})`, async (t) => {
  const h = await startTestBackhaul(t); // API only: runs execute in worker child processes
  const crm = await startFakeCrm({ delayMs: 8 });
  t.teardown(() => crm.close());
  const { src, syncId } = await setupSync(t, h, crm.url, { rows: ROWS, delivery: { batchSize: BATCH, concurrency: CONCURRENCY, maxRetries: 5 } });
  const db = postgres(h.databaseUrl, { max: 2, onnotice: () => {} });
  t.teardown(() => db.end());

  let child: ChildProcess = spawnWorker(h);
  t.teardown(() => kill9(child));
  let killing: Promise<void> | undefined;
  let totalKills = 0;

  const changes = [
    async () => {},
    async () => {
      await src`update src.people set name = name || ' v2' where id % 2 = 0`;
      await seedPeople(src, 500, ROWS + 1);
    },
    async () => {
      await src`update src.people set age = age + 1 where id % 3 = 0`;
    },
  ];

  for (let r = 0; r < 3; r++) {
    await changes[r]();
    const appliedAtStart = new Map(crm.applied);
    const answeredAtStart = crm.answeredBatches.length;
    // For each row acknowledged when a worker died: how often the destination had applied it then.
    const appliedAtAck = new Map<string, number>();
    let runId = '';
    let kills = 0;

    const killNow = (why: string) =>
      (killing ??= (async () => {
        await kill9(child);
        kills++;
        totalKills++;
        t.comment(`run ${r + 1}: kill -9 (${why})`);
        for (const rec of await db<{ primary_key: string }[]>`select primary_key from run_outcomes where run_id = ${runId} and status = 'succeeded'`) {
          const email = `user${rec.primary_key}@example.com`;
          if (!appliedAtAck.has(email)) appliedAtAck.set(email, crm.applied.get(email) ?? 0);
        }
        await releaseDeadWorkers(db);
        child = spawnWorker(h);
      })().finally(() => (killing = undefined)));

    // Kill 1: after a random delay (whatever phase the run is in). Kill 2: at a random batch.
    const killAtBatch = 3 + Math.floor(rand() * 25);
    crm.onBatch = async () => {
      if (crm.answeredBatches.length - answeredAtStart === killAtBatch && kills < 2) await killNow(`at batch ${killAtBatch}`);
    };
    const trig = await h.request('POST', `/v1/syncs/${syncId}/runs`, { body: {} });
    runId = trig.body.id;
    const delay = Math.floor(rand() * 2500);
    const timer = setTimeout(() => void killNow(`${delay} ms after the trigger`), delay);
    const run = await waitForRun(h, runId, 180_000, (x) => ['succeeded', 'partially_succeeded', 'failed', 'cancelled'].includes(x.status) && !killing);
    clearTimeout(timer);
    await killing;
    crm.onBatch = undefined;

    t.equal(run.status, 'succeeded', `run ${r + 1} succeeded after ${kills} kills ${JSON.stringify(run.error)}`);
    const planned = run.counts.planned.insert + run.counts.planned.update;
    t.same(run.counts.rejected, { insert: 0, update: 0, delete: 0 });
    t.equal(run.counts.succeeded.insert + run.counts.succeeded.update, planned, 'every planned row succeeded');
    const model = await src<{ email: string; name: string; age: number }[]>`select email, name, age from src.people`;
    t.equal(crm.contacts.size, model.length, 'the destination holds every row');
    t.same(model.filter((m) => crm.contacts.get(m.email)?.name !== m.name || crm.contacts.get(m.email)?.age !== m.age).slice(0, 3), [], 'with current values');
    const resent = [...appliedAtAck].filter(([email, n]) => crm.applied.get(email) !== n);
    t.same(resent.slice(0, 5), [], `no acknowledged row was sent again (${appliedAtAck.size} acknowledged at kills)`);
    const applied = [...crm.applied].reduce((a, [email, n]) => a + n - (appliedAtStart.get(email) ?? 0), 0);
    t.ok(applied >= planned && applied - planned <= kills * CONCURRENCY * BATCH, `only batches in flight at a kill were applied twice (${applied - planned} rows)`);
    const [{ n }] = await db`select count(*)::int as n from run_outcomes where run_id = ${runId} and status = 'succeeded'`;
    t.equal(n, planned, 'one record per planned row');
  }
  t.ok(totalKills >= 3, `workers were killed ${totalKills} times`);
});
