import t from 'tap';
import type { Test } from 'tap';
import { connectDatabase } from '../../src/db/client.ts';
import { checkpoint, LeaseLostError, registerInflight, withdrawInflight } from '../../src/engine/checkpoint.ts';
import { createStaging, markStagingIntact } from '../../src/engine/staging.ts';
import { RunState } from '../../src/engine/run-state.ts';
import { emptyCounts } from '../../src/engine/status.ts';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { setupSync } from '../helpers/sync-setup.ts';

// Batch registrations (checkpoint.ts) and run claims (run-state.ts) share the run row's locks:
// - a registration must not wait for the same execution's checkpoint or heartbeat (a plain
//   update of the run row): it took the row's share lock before, and every batch waited for the
//   checkpoint of the batches before it (10 ms per registration at 1,000-row batches);
// - a takeover's claim must still be ordered against a registration in flight: either the claim
//   sees the batch, or the registration sees the run lost (the redelivery guarantee).

const within = <T>(p: Promise<T>, ms: number, what: string): Promise<T> =>
  Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`${what}: still waiting after ${ms} ms`)), ms).unref())]);

/** A started Backhaul with a sync and a running run of it (lease 1), and a connection of the test's own. */
async function runningRun(t: Test, slug: string, runId: string, max: number) {
  const h = await startTestBackhaul(t, { env: { LOG_LEVEL: 'fatal' } });
  const fx = await setupSync(t, h, 'http://127.0.0.1:9/', { slug });
  const database = connectDatabase(h.databaseUrl, { max });
  t.teardown(() => database.close());
  const { sql } = database;
  const [s] = await sql<{ workspace_id: string }[]>`select workspace_id from syncs where id = ${fx.syncId}`;
  await sql`
    insert into runs (id, workspace_id, sync_id, status, trigger, counts, attempts, full_resync, allow_deletions, started_at)
    values (${runId}, ${s.workspace_id}, ${fx.syncId}, 'running', 'api', ${JSON.stringify(emptyCounts())}::jsonb, 1, false, false, now())`;
  return { h, sql };
}

t.test('a registration passes an open checkpoint; a takeover waits for a registration and then fences it out', async (t) => {
  const runId = 'run_locks1';
  const { h, sql } = await runningRun(t, 'locks', runId, 6);

  // 1. A checkpoint of this execution holds the run row (its fence updates the counts) while the
  // next batch registers: the registration completes without waiting for it. (The generous bound
  // only tells "waits for the open transaction" from "does not": the transaction stays open
  // until the registration has answered.)
  const checkpointOpen = sql.reserve();
  const cp = await checkpointOpen;
  try {
    await cp`begin`;
    await cp`update runs set counts = counts, heartbeat_at = now() where id = ${runId} and attempts = 1`;
    await within(registerInflight(sql, runId, 1, [{ batch: 1, primaryKeys: ['a', 'b'] }]), 30_000, 'registration behind an open checkpoint');
    await cp`commit`;
  } finally {
    cp.release();
  }
  const [reg] = await sql<{ primary_keys: string[] }[]>`select primary_keys from run_inflight where run_id = ${runId} and batch = 1`;
  t.same(reg.primary_keys, ['a', 'b'], 'registered, keys in order');

  // 2. A registration whose transaction is still open (simulated: its key-share lock held in an
  // open transaction) holds back a takeover's claim until it commits; the claim then sees it.
  const regOpen = await sql.reserve();
  let claimed: RunState | null | undefined;
  try {
    await regOpen`begin`;
    await regOpen`
      insert into run_inflight (run_id, lease, batch, primary_keys)
      select r.id, 1, 2, array['c'] from runs r where r.id = ${runId} and r.attempts = 1 for key share of r`;
    const claim = RunState.claim(h.bh.database, runId, 'other-worker', {}).then((r) => (claimed = r));
    // The claim is blocked on the row lock: PostgreSQL shows it waiting on a tuple or transaction lock.
    const waitStart = Date.now();
    for (;;) {
      const [w] = await sql<{ n: number }[]>`
        select count(*)::int as n from pg_stat_activity
        where datname = current_database() and wait_event_type = 'Lock' and query ilike '%from runs where id = %for update%'`;
      if (w.n > 0) break;
      if (claimed !== undefined) throw new Error('the claim did not wait for the open registration');
      if (Date.now() - waitStart > 30_000) throw new Error('the claim never showed as waiting for the row lock');
      await new Promise((r) => setTimeout(r, 20));
    }
    t.equal(claimed, undefined, 'the claim waits while the registration is open');
    await regOpen`commit`;
    await within(claim, 30_000, 'claim after the registration committed');
  } finally {
    regOpen.release();
  }
  t.ok(claimed, 'claimed after the registration committed');
  const [run] = await sql<{ attempts: number }[]>`select attempts from runs where id = ${runId}`;
  t.equal(run.attempts, 2, 'the takeover holds lease 2');
  const prior = await sql<{ batch: number }[]>`select batch from run_inflight where run_id = ${runId} and lease = 1 order by batch`;
  t.same(prior.map((p) => p.batch), [1, 2], 'the takeover sees both batches of the old execution');

  // 3. The old execution's next registration is fenced out.
  const fenced = await registerInflight(sql, runId, 1, [{ batch: 3, primaryKeys: ['d'] }]).then(() => undefined, (e: unknown) => e);
  t.ok(fenced instanceof LeaseLostError, 'the old lease registers nothing more');
  const [none] = await sql<{ n: number }[]>`select count(*)::int as n from run_inflight where run_id = ${runId} and batch = 3`;
  t.equal(none.n, 0);
});

t.test('batches registered together: each gets its own keys, a repeat registers nothing twice, a lost lease registers none', async (t) => {
  const runId = 'run_locks2';
  const { sql } = await runningRun(t, 'locks2', runId, 2);
  const registered = async () =>
    (await sql<{ batch: number; primary_keys: string[] }[]>`select batch, primary_keys from run_inflight where run_id = ${runId} order by batch`).map((r) => [r.batch, r.primary_keys]);

  // Keys that need quoting in an array literal, a one-key batch between longer ones, non-consecutive numbers.
  const group = [
    { batch: 4, primaryKeys: ['a,1', 'b"2', 'c\\3'] },
    { batch: 5, primaryKeys: ['{d}'] },
    { batch: 7, primaryKeys: ['e', 'f', ' g ', 'NULL'] },
  ];
  await registerInflight(sql, runId, 1, group);
  t.same(await registered(), group.map((b) => [b.batch, b.primaryKeys]), 'each batch holds exactly its keys, in order');

  // Repeated (an attempt whose answer was lost) with one more batch: only the new one is added.
  await registerInflight(sql, runId, 1, [...group, { batch: 8, primaryKeys: ['h'] }]);
  t.same(await registered(), [...group.map((b) => [b.batch, b.primaryKeys]), [8, ['h']]], 'a repeat adds only what was missing');

  await sql`update runs set attempts = 2 where id = ${runId}`;
  const fenced = await registerInflight(sql, runId, 1, [{ batch: 9, primaryKeys: ['i'] }, { batch: 10, primaryKeys: ['j'] }]).then(() => undefined, (e: unknown) => e);
  t.ok(fenced instanceof LeaseLostError, 'a lost lease registers none of the group');
  t.equal((await registered()).length, 4);
});

t.test('a checkpoint registers the batches that take the slots it frees, fenced with it; a withdrawn successor is gone', async (t) => {
  const runId = 'run_locks3';
  const { sql } = await runningRun(t, 'locks3', runId, 2);
  await createStaging(sql, runId);
  await markStagingIntact(sql, runId);
  const [{ sync_id: syncId, workspace_id: workspaceId, v }] = await sql<{ sync_id: string; workspace_id: string; v: number }[]>`
    select r.sync_id, r.workspace_id, s.snapshot_version as v from runs r join syncs s on s.id = r.sync_id where r.id = ${runId}`;
  const registered = async () =>
    (await sql<{ batch: number; primary_keys: string[] }[]>`select batch, primary_keys from run_inflight where run_id = ${runId} order by batch`).map((r) => [r.batch, r.primary_keys]);
  const counts = emptyCounts();
  const ckpt = (lease: number, batches: number[], register: { batch: number; primaryKeys: string[] }[]) =>
    checkpoint({
      sql,
      run: { id: runId, workspaceId, syncId },
      lease,
      snapshotVersion: v,
      insertsAreNew: true,
      recordsFresh: true,
      group: batches.map((batch) => ({ batch, outcomes: [] })),
      register,
      counts,
    });

  await registerInflight(sql, runId, 1, [{ batch: 1, primaryKeys: ['a'] }, { batch: 2, primaryKeys: ['b'] }]);
  const successors = [
    { batch: 3, primaryKeys: ['c,1', 'd"2'] },
    { batch: 4, primaryKeys: ['e'] },
  ];
  await ckpt(1, [1, 2], successors);
  t.same(await registered(), successors.map((b) => [b.batch, b.primaryKeys]), 'the checkpointed batches are gone, their successors registered with exactly their keys');

  // Repeated (its answer was lost): it finds its batches gone and writes nothing twice.
  await ckpt(1, [1, 2], successors);
  t.same(await registered(), successors.map((b) => [b.batch, b.primaryKeys]), 'a repeat registers nothing twice');

  await withdrawInflight(sql, runId, 1, 4);
  t.same(await registered(), [[3, ['c,1', 'd"2']]], 'a successor that will not be sent is withdrawn');

  // A takeover: the checkpoint of batch 3 is refused, and its successor is not registered.
  await sql`update runs set attempts = 2 where id = ${runId}`;
  const fenced = await ckpt(1, [3], [{ batch: 5, primaryKeys: ['f'] }]).then(() => undefined, (e: unknown) => e);
  t.ok(fenced instanceof LeaseLostError, 'a lost lease refuses the checkpoint');
  t.same(await registered(), [[3, ['c,1', 'd"2']]], 'and registers no successor');
});
