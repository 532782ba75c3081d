import t from 'tap';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { startFakeCrm } from '../fakes/crm.ts';
import { runToEnd, setupSync } from '../helpers/sync-setup.ts';

// Back-to-back runs of a sync start on the notification of their trigger or of the release of
// the sync's job queue, never at a poll: both lanes poll once an hour here, so a run that
// depended on a poll would not start within the test's timeout.
//
// The schedule lane does not answer job notifications: its job fetch, woken by a run's trigger
// at the same moment as the run lane's, locked the sync's job queue row just when the run lane
// looked (graphile-worker's fetch locks every available queue row), and the run waited for the
// run lane's next poll. Its fetches are counted: without that rule every trigger wakes it.

t.test('back-to-back runs of a sync start without a poll; the schedule lane is not woken by them', async (t) => {
  const HOUR = 3_600_000;
  const h = await startTestBackhaul(t, { start: { worker: true, workerPollMs: { runs: HOUR, schedules: HOUR } } });
  const crm = await startFakeCrm();
  t.teardown(() => crm.close());
  const { src, syncId } = await setupSync(t, h, crm.url, { rows: 3 });
  const worker = h.bh.worker!;
  let scheduleLooks = 0;
  worker.events.schedules.on('worker:getJob:start', () => scheduleLooks++);
  const before = scheduleLooks;

  const ROUNDS = 12;
  for (let i = 0; i < ROUNDS; i++) {
    // A change each time, so every run has a row to send (and a job to finish after it).
    await src`update src.people set age = age + 1 where id = ${1 + (i % 3)}`;
    // runToEnd triggers as soon as the previous run is terminal: its job may still hold the queue.
    const run = await runToEnd(h, syncId);
    t.equal(run.status, 'succeeded', `run ${i + 1} started and succeeded`);
  }
  t.equal(scheduleLooks - before, 0, 'the schedule lane looked for no job while runs were triggered');
});
