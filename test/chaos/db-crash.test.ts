import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import postgres from 'postgres';
import { freePort, startEmbeddedPostgres, type EmbeddedDatabase } from '../../src/db/embedded.ts';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { startFakeCrm } from '../fakes/crm.ts';
import { setupSync, runToEnd, waitForRun } from '../helpers/sync-setup.ts';
import { env, sleep, superviseWorker } from './helpers.ts';

// The control database CRASHES (an immediate shutdown: what an OOM kill, a power cut or a failover
// to a standby leaves) in the middle of a mirror run. Crash recovery empties every UNLOGGED table:
// the run's staged rows and plan still exist but hold nothing. A run resumed on them would find
// no row claiming any record and plan to delete the whole destination. It must instead notice
// its staging was lost, read the model again, and never send a delete for a record the model
// still holds. (db-restart.test.ts: a clean restart, which keeps unlogged tables.)

const ROWS = env('CHAOS_KILL_ROWS', 3000);

/** Immediate shutdown of the embedded PostgreSQL of `dir` (SIGQUIT to its postmaster: no checkpoint, crash recovery on the next start). */
async function crash(dir: string): Promise<void> {
  const pid = Number(readFileSync(join(dir, 'pg', 'postmaster.pid'), 'utf8').split('\n')[0]);
  process.kill(pid, 'SIGQUIT');
  for (;;) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    await sleep(50);
  }
}

// An incremental run (its key scan kept in an unlogged table too) and a full resync (every row staged).
for (const [at, body] of [['delivering', {}], ['staged', {}], ['delivering', { fullResync: true }], ['staged', { fullResync: true }]] as const) {
  t.test(`control database crashed once a mirror ${'fullResync' in body ? 'full resync' : 'run'}'s rows are ${at === 'staged' ? 'staged' : 'being delivered'}`, async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'bh-chaos-crash-'));
    const port = await freePort();
    let pg: EmbeddedDatabase = await startEmbeddedPostgres({ dataDir: dir, port });
    t.teardown(async () => {
      await pg.stop().catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    });
    const h = await startTestBackhaul(t, { env: { DATABASE_URL: pg.url } });
    const db = postgres(h.databaseUrl, { max: 1, onnotice: () => {} });
    t.teardown(() => db.end());
    const worker = superviseWorker(h, db);
    t.teardown(() => worker.stop());
    const crm = await startFakeCrm({ delayMs: 5 });
    t.teardown(() => crm.close());
    const { src, syncId } = await setupSync(t, h, crm.url, { rows: ROWS, mode: 'mirror', delivery: { batchSize: 50, concurrency: 2, maxRetries: 5 } });

    const first = await runToEnd(h, syncId, {}, 180_000);
    t.equal(first.status, 'succeeded', 'the first run delivers every row');
    t.equal(crm.contacts.size, ROWS);

    // Every row changes: the second run plans an update of each.
    await src`update src.people set name = name || ' (renamed)'`;
    let crashed: Promise<void> | undefined;
    const crashAndStart = () =>
      (crashed ??= (async () => {
        await crash(dir);
        pg = await startEmbeddedPostgres({ dataDir: dir, port });
      })());
    const batchesBefore = crm.answeredBatches.length;
    if (at === 'delivering') {
      crm.onBatch = () => {
        if (crm.answeredBatches.length === batchesBefore + 6) void crashAndStart();
      };
    }
    const trig = await h.request('POST', `/v1/syncs/${syncId}/runs`, { body });
    t.equal(trig.status, 202);
    if (at === 'staged') {
      // Crashed as soon as the rows are staged (staged_at is set): while diffing, or at the latest
      // before the plan's first batches are acknowledged.
      for (;;) {
        const [r] = await db<{ staged: boolean }[]>`select staged_at is not null as staged from runs where id = ${trig.body.id}`;
        if (r?.staged) break;
        await sleep(5);
      }
      void crashAndStart();
    } else {
      await new Promise<void>((resolve) => {
        const i = setInterval(() => {
          if (crashed) {
            clearInterval(i);
            resolve();
          }
        }, 20);
      });
    }
    await crashed;
    crm.onBatch = undefined;
    t.pass('the database crashed and recovered');

    const run = await waitForRun(h, trig.body.id, 180_000);
    t.ok(['succeeded', 'failed'].includes(run.status), `the run ended cleanly: ${run.status} ${JSON.stringify(run.error)}`);
    t.comment(`worker process exits: ${worker.exits()}; counts ${JSON.stringify(run.counts)}`);
    t.same(crm.deleted.slice(0, 5), [], 'no record the model holds was deleted');
    if (run.status !== 'succeeded') {
      const next = await runToEnd(h, syncId, {}, 180_000);
      t.equal(next.status, 'succeeded', 'the next run succeeds');
    }
    t.same(crm.deleted.slice(0, 5), [], 'still no delete');
    const model = await src<{ email: string; name: string }[]>`select email, name from src.people`;
    t.equal(crm.contacts.size, ROWS, 'the destination holds every row');
    t.same(model.filter((m) => crm.contacts.get(m.email)?.name !== m.name).slice(0, 3), [], 'with its current values');
  });
}
