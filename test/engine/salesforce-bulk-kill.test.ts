import type { ChildProcess } from 'node:child_process';
import t from 'tap';
import postgres from 'postgres';
import { startFakeSalesforce } from '../fakes/salesforce.ts';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { waitForRun } from '../helpers/sync-setup.ts';
import { kill9, releaseDeadWorkers, spawnWorker } from '../chaos/helpers.ts';

// A worker process killed (SIGKILL) while the Salesforce Bulk API 2.0 job of its run is being
// processed: the job id was recorded on the run row (runs.write_state) before the upload, so the
// next worker polls that same job and reads its results. No second job is created, the CSV is not
// uploaded again, and no row goes through sObject Collections instead.

const ROWS = 3000;

t.test('kill -9 of the worker while its bulk job runs: the next worker resumes the same job', async (t) => {
  const h = await startTestBackhaul(t); // API only: the run executes in worker processes
  const sf = await startFakeSalesforce();
  t.teardown(() => sf.close());
  const db = postgres(h.databaseUrl, { max: 2, onnotice: () => {} });
  t.teardown(() => db.end());
  await db`create schema src`;
  await db`create table src.contacts (id int primary key, ext text, last_name text)`;
  await db`insert into src.contacts select i, 'ext-' || i, 'Last ' || i from generate_series(1, ${ROWS}::int) i`;
  const ok = async (p: Promise<{ status: number; body: any }>) => {
    const r = await p;
    if (r.status >= 300) throw new Error(`${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  };
  const u = new URL(h.databaseUrl);
  await ok(h.request('POST', '/v1/connections', { body: { slug: 'wh', name: 'Warehouse', type: 'postgres', config: { host: u.hostname, port: Number(u.port), database: u.pathname.slice(1), user: decodeURIComponent(u.username) }, secrets: { password: decodeURIComponent(u.password) } } }));
  await ok(h.request('POST', '/v1/connections', { body: { slug: 'sf', name: 'Salesforce', type: 'salesforce', config: { instanceUrl: sf.url, bulkThreshold: 1000, bulkPollIntervalMs: 5, bulkPollMaxIntervalMs: 20 }, secrets: { accessToken: sf.issueToken() } } }));
  await ok(h.request('POST', '/v1/models', { body: { slug: 'contacts', name: 'Contacts', connectionId: 'wh', sql: 'select id, ext, last_name from src.contacts', primaryKey: 'id' } }));
  const sync = await ok(
    h.request('POST', '/v1/syncs', {
      body: { slug: 'contacts', name: 'Contacts', modelId: 'contacts', destinationId: 'sf', object: 'Contact', mode: 'upsert', matchKey: { sourceColumn: 'ext', destinationField: 'External_Id__c' }, delivery: { batchSize: 200, maxRetries: 5 } },
    }),
  );
  await ok(
    h.request('PUT', `/v1/syncs/${sync.id}/mappings`, {
      body: [
        { destinationField: 'External_Id__c', source: { column: 'ext' } },
        { destinationField: 'LastName', source: { column: 'last_name' } },
      ],
    }),
  );

  // The job stays InProgress until released; the first poll of it kills the worker.
  sf.holdBulk = true;
  let child: ChildProcess = spawnWorker(h);
  t.teardown(() => kill9(child));
  let killed: Promise<void> | undefined;
  let pollsAtKill = 0;
  sf.onJobPoll = (job) => {
    if (killed) return;
    pollsAtKill = job.polls;
    killed = kill9(child);
  };
  const trig = await ok(h.request('POST', `/v1/syncs/${sync.id}/runs`, { body: {} }));
  await waitForRun(h, trig.id, 120_000, () => killed !== undefined);
  await killed;
  sf.onJobPoll = undefined;

  t.equal(sf.jobs.size, 1, 'one job was created before the kill');
  const job = [...sf.jobs.values()][0];
  t.equal(job.state, 'InProgress', 'closed (UploadComplete) and being processed');
  t.equal(job.uploads, 1);
  const [run] = await db<{ status: string; write_state: Record<string, string> }[]>`select status, write_state from runs where id = ${trig.id}`;
  t.equal(run.status, 'running', 'the run was left running by the dead worker');
  t.same(Object.values(run.write_state), [job.id], 'the job id is on the run row (runs.write_state)');

  // The stale-run sweep's release, at once (the test knows the worker is dead); then a new worker.
  await releaseDeadWorkers(db);
  sf.log.length = 0;
  sf.onJobPoll = () => (sf.holdBulk = false);
  child = spawnWorker(h);
  const done = await waitForRun(h, trig.id, 120_000);
  sf.onJobPoll = undefined;

  t.equal(done.status, 'succeeded', JSON.stringify(done.error));
  t.same(done.counts.succeeded, { insert: ROWS, update: 0, delete: 0 });
  t.same({ jobs: sf.count('jobsCreated'), uploads: sf.count('uploads'), collections: sf.count('collections') }, { jobs: 1, uploads: 1, collections: 0 }, 'no second job, no second upload, no row sent another way');
  t.ok(job.polls > pollsAtKill, 'the new worker polled the same job');
  t.ok(sf.log.some((l) => l.method === 'GET' && l.path.startsWith(`/jobs/ingest/${job.id}/successfulResults`)), "and read that job's results");
  t.notOk(sf.log.some((l) => l.method === 'POST' && l.path.startsWith('/jobs/ingest')), 'without creating a job');
  t.equal(sf.all('Contact').length, ROWS, 'every row is in Salesforce once');
  const [{ n }] = await db<{ n: number }[]>`select count(*)::int as n from run_outcomes where run_id = ${trig.id} and status = 'succeeded'`;
  t.equal(n, ROWS, 'one record per row');
  const [{ ids }] = await db<{ ids: number }[]>`select count(record_id)::int as ids from run_outcomes where run_id = ${trig.id}`;
  t.equal(ids, ROWS, 'with the Id each got from the resumed job');
});
