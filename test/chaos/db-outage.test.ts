import t from 'tap';
import postgres from 'postgres';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { startFakeCrm } from '../fakes/crm.ts';
import { setupSync } from '../helpers/sync-setup.ts';
import { startPgProxy } from './pg-proxy.ts';
import { spawnBackhaul, until } from './spawned.ts';
import { env, sleep } from './helpers.ts';

// The control database goes away in the middle of a run — every connection reset and every new
// one refused, as when PostgreSQL restarts or fails over — for 1 s, 5 s and 60 s, through a TCP
// proxy between a `backhaul serve` process (API + worker) and the shared PostgreSQL. The process
// rides it out: it never exits; while the database is away the API answers 503
// `database_unavailable` and /readyz fails; both recover without a restart; the run resumes
// where it was and succeeds, every row applied once (no acknowledged batch sent again), its
// counts equal to its records.

const ROWS = env('CHAOS_OUTAGE_ROWS', 1500);
const OUTAGES_MS = (process.env.CHAOS_OUTAGES_MS ?? '1000,5000,60000').split(',').map(Number);

t.setTimeout(Math.max(600_000, OUTAGES_MS.reduce((a, b) => a + b, 0) * 3));

t.test('the control database is cut and restored mid-run', async (t) => {
  const h = await startTestBackhaul(t); // setup only: the process under test is spawned below
  const db = postgres(h.databaseUrl, { max: 1, onnotice: () => {} });
  t.teardown(() => db.end());
  const proxy = await startPgProxy(h.databaseUrl);
  t.teardown(() => proxy.close());
  const bh = await spawnBackhaul(h, 'serve', { databaseUrl: proxy.url });
  t.teardown(() => bh.kill9());
  void bh.exited.then((e) => t.comment(`the server exited (${JSON.stringify(e)}):\n${bh.lines.slice(-30).join('\n')}`));
  await until('the spawned server to be ready', async () => (await bh.request('GET', '/readyz', { token: null })).status === 200);

  for (const [i, outageMs] of OUTAGES_MS.entries()) {
    await t.test(`${outageMs / 1000} s outage`, async (t) => {
      const crm = await startFakeCrm({ delayMs: 10 });
      t.teardown(() => crm.close());
      // The 60 s case needs no more rows: the run only has to outlast the cut.
      const rows = outageMs >= 60_000 ? Math.min(ROWS, 600) : ROWS;
      const { syncId } = await setupSync(t, h, crm.url, { rows: i === 0 ? rows : 0, slug: `outage${i}`, delivery: { batchSize: 25, concurrency: 2, maxRetries: 5 } });
      await db`delete from src.people where id > ${rows}`;
      await db`insert into src.people (id, email, name, age) select g, 'user' || g || '@example.com', 'User ' || g, 20 from generate_series(1, ${rows}::int) g on conflict do nothing`;

      const trig = await bh.request('POST', `/v1/syncs/${syncId}/runs`, { body: {} });
      t.equal(trig.status, 202, 'triggered through the spawned API');
      const runId = trig.body.id as string;
      await until('a few batches to be delivered', () => crm.answeredBatches.length >= 4, 120_000, 5);
      const linesBefore = bh.lines.length;
      proxy.cut();
      const cutAt = Date.now();

      // While it is away: 503 problem+json database_unavailable, and /readyz fails.
      const down = await bh.request('GET', `/v1/syncs/${syncId}`);
      t.equal(down.status, 503, `the API answers 503 while the database is away: ${down.text.slice(0, 300)}`);
      t.match(down.headers.get('content-type') ?? '', /application\/problem\+json/);
      t.equal(down.body?.code, 'database_unavailable');
      const ready = await bh.request('GET', '/readyz', { token: null });
      t.equal(ready.status, 503, '/readyz fails while the database is away');
      const answeredDuringCut = crm.answeredBatches.length;

      await sleep(Math.max(0, outageMs - (Date.now() - cutAt)));
      t.equal(bh.exit, undefined, `the process is still running after ${outageMs / 1000} s without its database`);
      t.ok(crm.answeredBatches.length - answeredDuringCut <= 2, 'delivery paused: at most the batches in flight at the cut were answered during it');
      proxy.restore();

      await until('/readyz to recover', async () => (await bh.request('GET', '/readyz', { token: null })).status === 200, 120_000, 100);
      const up = await bh.request('GET', `/v1/syncs/${syncId}`);
      t.equal(up.status, 200, 'the API answers again without a restart');

      const run = await until(
        'the run to end',
        async () => {
          const r = await bh.request('GET', `/v1/runs/${runId}`);
          return ['succeeded', 'partially_succeeded', 'failed', 'cancelled'].includes(r.body?.status) ? r.body : undefined;
        },
        300_000,
        100,
      );
      t.equal(run.status, 'succeeded', `the run resumed and succeeded: ${JSON.stringify(run.error)}`);
      t.equal(run.counts.succeeded.insert + run.counts.succeeded.update, rows, 'every row delivered');
      const twice = [...crm.applied].filter(([, n]) => n !== 1);
      t.same(twice.slice(0, 5), [], 'every row applied exactly once: no acknowledged batch was sent again');
      t.equal(crm.contacts.size, rows);
      const [{ n }] = await db`select count(*)::int as n from run_outcomes where run_id = ${runId} and status = 'succeeded'`;
      t.equal(n, run.counts.succeeded.insert + run.counts.succeeded.update, 'the counts equal the records');
      t.equal(bh.exit, undefined, 'the process never exited');
      // A rejection nothing awaits inside a library (graphile-worker completes jobs without
      // awaiting it) is classified by the process handler as a lost control-database connection,
      // logged at warn and survived — that path is what this test proves (the process never
      // exited, the counts equal the records). Anything else unhandled is a failure.
      const crashes = bh.lines
        .slice(linesBefore)
        .filter((l) => /TypeError|unhandled|uncaught/i.test(l) && !/"level":40,.*unhandled rejection: control database connection lost/.test(l));
      t.same(crashes.slice(0, 3), [], 'nothing unhandled was logged');
    });
  }
});
