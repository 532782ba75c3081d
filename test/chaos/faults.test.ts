import t from 'tap';
import postgres from 'postgres';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { startFakeCrm } from '../fakes/crm.ts';
import { runToEnd, setupSync } from '../helpers/sync-setup.ts';
import { engine, env, sleep } from './helpers.ts';

// A destination that misbehaves in every way at once, over CHAOS_ROWS rows: random 429 with
// Retry-After, 500/502/503, connection resets, answers slower than the connection's timeout
// (2 s), and per-row rejects. At the end the destination holds exactly the model minus the
// rejected rows, each rejected row has the destination's reason, and the next run sends
// exactly those rows again.

const ROWS = env('CHAOS_ROWS', 100_000);
const rejectedId = (id: number) => id % 61 === 0;
const reason = (email: string) => `address ${email} is on the suppression list`;

t.test(`fault-injecting destination over ${ROWS} rows`, async (t) => {
  const h = await startTestBackhaul(t, { start: { worker: true, engine } });
  const crm = await startFakeCrm({
    p429: 0.01,
    p5xx: 0.05,
    pReset: 0.02,
    retryAfterSeconds: 1,
    reject: (row) => (rejectedId(Number(/^user(\d+)@/.exec(String(row.email))?.[1])) ? reason(String(row.email)) : undefined),
  });
  t.teardown(() => crm.close());
  // Answers slower than the timeout: the client gives up (and retries) while the server goes on.
  let arrivals = 0;
  let slow = 0;
  let slowPending = 0;
  crm.onBatch = async () => {
    if (++arrivals % 37 === 5) {
      slow++;
      slowPending++;
      await sleep(2300);
      slowPending--;
    }
  };
  const { src, syncId } = await setupSync(t, h, crm.url, { rows: ROWS, delivery: { batchSize: 250, concurrency: 4, maxRetries: 20, maxRequestsPerSecond: 500 } });
  const db = postgres(h.databaseUrl, { max: 1, onnotice: () => {} });
  t.teardown(() => db.end());

  const model = await src<{ id: number; email: string; name: string; age: number }[]>`select id, email, name, age from src.people order by id`;
  const expectedRejected = new Set(model.filter((m) => rejectedId(m.id)).map((m) => m.email));

  const run = await runToEnd(h, syncId, {}, 900_000);
  t.equal(run.status, 'partially_succeeded', `run ends partially_succeeded ${JSON.stringify(run.error)}`);
  t.same(run.counts.succeeded, { insert: ROWS - expectedRejected.size, update: 0, delete: 0 });
  t.same(run.counts.rejected, { insert: expectedRejected.size, update: 0, delete: 0 });
  t.ok(slow > 0, `${slow} answers came after the client's timeout`);
  t.ok(crm.requests > crm.answeredBatches.length, `faults were injected (${crm.requests - crm.answeredBatches.length} requests faulted)`);

  // The destination equals the model minus the rejected rows.
  const wrong = model.filter((m) => {
    const c = crm.contacts.get(m.email);
    return expectedRejected.has(m.email) ? c !== undefined : c?.name !== m.name || Number(c?.age) !== m.age;
  });
  t.equal(crm.contacts.size, ROWS - expectedRejected.size, 'the destination holds every accepted row');
  t.same(wrong.slice(0, 5), [], 'with the model values, and none of the rejected rows');

  // Every rejected row has its reason.
  const rejected = await db<{ primary_key: string; error_message: string }[]>`
    select primary_key, error_message from run_outcomes where run_id = ${run.id} and status = 'rejected'`;
  t.equal(rejected.length, expectedRejected.size, 'one rejected record per rejected row');
  const badReasons = rejected.filter((r) => r.error_message !== reason(`user${r.primary_key}@example.com`));
  t.same(badReasons.slice(0, 5), [], "each with the destination's own reason");
  const [{ n: succeeded }] = await db`select count(*)::int as n from run_outcomes where run_id = ${run.id} and status = 'succeeded'`;
  t.equal(succeeded, ROWS - expectedRejected.size, 'one succeeded record per delivered row');

  // The next run retries exactly the rejected rows (still refused: same reason again).
  while (slowPending > 0) await sleep(50); // late answers to run 1's timed-out requests
  const answeredBefore = crm.answeredBatches.length;
  const next = await runToEnd(h, syncId, {}, 300_000);
  t.same(next.counts.planned, { insert: expectedRejected.size, update: 0, delete: 0 }, 'planned: only the rejected rows');
  const resent = new Set(crm.answeredBatches.slice(answeredBefore).flat());
  t.same([...resent].sort(), [...expectedRejected].sort(), 'sent: exactly the rejected rows');
  const nextRecords = await db<{ primary_key: string }[]>`select primary_key from run_outcomes where run_id = ${next.id}`;
  t.same(new Set(nextRecords.map((r) => `user${r.primary_key}@example.com`)), expectedRejected);
});
