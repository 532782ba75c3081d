import postgres from 'postgres';
import t from 'tap';
import { startFakeCrm } from '../fakes/crm.ts';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { runToEnd, setupSync } from '../helpers/sync-setup.ts';

// A run's notifications on `backhaul_runs` are coalesced (src/engine/run-state.ts): every status
// and phase change and the terminal state are published, writes that change only counters at most
// once per countsNotifyMs. With the window longer than any run, a run publishes exactly its
// states; with none, every write (the counters too). GraphQL runUpdated and ?wait= read the run on
// each notification, so they still see each phase and the end (test/graphql, test/http/run-wait).

type Note = { runId: string; status: string; phase: string | null };

async function notificationsOfOneRun(t: { teardown(fn: () => unknown): void }, countsNotifyMs: number): Promise<{ notes: Note[]; run: any }> {
  const h = await startTestBackhaul(t, { start: { worker: true, engine: { retryBaseMs: 5, heartbeatMs: 200, countsNotifyMs } } });
  const crm = await startFakeCrm();
  t.teardown(() => crm.close());
  const { syncId } = await setupSync(t, h, crm.url, { rows: 120 });
  const listen = postgres(h.databaseUrl, { max: 1, onnotice: () => {} });
  t.teardown(() => listen.end());
  const notes: Note[] = [];
  const sub = await listen.listen('backhaul_runs', (p) => notes.push(JSON.parse(p)));
  t.teardown(() => sub.unlisten());
  const run = await runToEnd(h, syncId);
  // The terminal notification is sent in the transaction that makes the run terminal: wait for it.
  const deadline = Date.now() + 60_000;
  while (!notes.some((n) => n.runId === run.id && n.status === run.status)) {
    if (Date.now() > deadline) throw new Error('timed out waiting for the terminal notification');
    await new Promise((r) => setTimeout(r, 20));
  }
  return { notes: notes.filter((n) => n.runId === run.id), run };
}

const states = (notes: Note[]) => notes.map((n) => `${n.status}/${n.phase ?? '-'}`);
const distinctInOrder = (xs: string[]) => xs.filter((x, i) => i === 0 || xs[i - 1] !== x);
const EVERY_STATE = ['queued/-', 'running/-', 'running/querying', 'running/diffing', 'running/delivering', 'running/finalizing', 'succeeded/finalizing'];

t.test('a run publishes each status and phase change and its end, and no counter-only write within the window', async (t) => {
  const { notes, run } = await notificationsOfOneRun(t, 3_600_000);
  t.equal(run.status, 'succeeded');
  t.same(states(notes), EVERY_STATE, 'one notification per state, in order, the terminal one last');
});

t.test('with no window every write is published (the counters too), the same states in the same order', async (t) => {
  const { notes } = await notificationsOfOneRun(t, 0);
  t.same(distinctInOrder(states(notes)), EVERY_STATE);
  t.ok(notes.length > EVERY_STATE.length, `counter-only writes published too (${notes.length} notifications)`);
});
