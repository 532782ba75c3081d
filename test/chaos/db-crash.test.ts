import t from 'tap';
import { runToEnd, waitForRun } from '../helpers/sync-setup.ts';
import { env, expectDestinationComplete, ownControlDatabase, sleep, until } from './helpers.ts';

// The control database CRASHES (an immediate shutdown: what an OOM kill, a power cut or a failover
// to a standby leaves) in the middle of a mirror run. Crash recovery empties every UNLOGGED table:
// the run's staged rows and plan still exist but hold nothing. A run resumed on them would find
// no row claiming any record and plan to delete the whole destination. It must instead notice
// its staging was lost, read the model again, and never send a delete for a record the model
// still holds. (db-restart.test.ts: a clean restart, which keeps unlogged tables.)

const ROWS = env('CHAOS_KILL_ROWS', 3000);

// An incremental run (its key scan kept in an unlogged table too) and a full resync (every row staged).
for (const [at, body] of [['delivering', {}], ['staged', {}], ['delivering', { fullResync: true }], ['staged', { fullResync: true }]] as const) {
  t.test(`control database crashed once a mirror ${'fullResync' in body ? 'full resync' : 'run'}'s rows are ${at === 'staged' ? 'staged' : 'being delivered'}`, async (t) => {
    const { h, db, worker, crm, src, syncId, restart } = await ownControlDatabase(t, { delayMs: 5, rows: ROWS, syncOpts: { mode: 'mirror', delivery: { batchSize: 50, concurrency: 2, maxRetries: 5 } } });

    const first = await runToEnd(h, syncId, {}, 180_000);
    t.equal(first.status, 'succeeded', 'the first run delivers every row');
    t.equal(crm.contacts.size, ROWS);

    // Every row changes: the second run plans an update of each.
    await src`update src.people set name = name || ' (renamed)'`;
    let crashed: Promise<void> | undefined;
    const crashAndStart = () =>
      (crashed ??= restart('crash'));
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
      await until(() => crashed);
    }
    await crashed;
    crm.onBatch = undefined;
    t.pass('the database crashed and recovered');

    const run = await waitForRun(h, trig.body.id, 180_000);
    t.ok(['succeeded', 'failed'].includes(run.status), `the run ended cleanly: ${run.status} ${JSON.stringify(run.error)}`);
    t.comment(`worker process exits: ${worker.exits()}; counts ${JSON.stringify(run.counts)}`);
    t.same(crm.deleted.slice(0, 5), [], 'no record the model holds was deleted');
    await expectDestinationComplete(t, h, { syncId, run, src, contacts: crm.contacts, rows: ROWS });
    t.same(crm.deleted.slice(0, 5), [], 'still no delete');
  });
}
