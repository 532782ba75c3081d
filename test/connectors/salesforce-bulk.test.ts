import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SalesforceDestination, type SalesforceConfig } from '../../src/connectors/destinations/salesforce.ts';
import type { WriteCheckpoint, WriteRequest, WriteRow } from '../../src/connectors/types.ts';
import { startFakeSalesforce, type FakeSalesforce } from '../fakes/salesforce.ts';
import { expectCode } from '../fakes/databases.ts';

let sf: FakeSalesforce;
t.before(async () => {
  sf = await startFakeSalesforce();
});
t.beforeEach(() => {
  for (const m of sf.records.values()) m.clear();
  sf.deleted.clear();
  sf.log.length = 0;
  sf.jobs.clear();
  sf.holdBulk = false;
  sf.onJobPoll = undefined;
  sf.validate = undefined;
});
t.teardown(() => sf.close());

const open = (over: Partial<SalesforceConfig> = {}) =>
  new SalesforceDestination({ instanceUrl: sf.url, bulkPollIntervalMs: 5, bulkPollMaxIntervalMs: 20, ...over }, { accessToken: sf.issueToken() }, { denyPrivateNetworks: false });
const rowsOf = (payloads: Record<string, unknown>[], ids?: string[]): WriteRow[] => payloads.map((payload, i) => ({ primaryKey: String(i), payload, ...(ids ? { recordId: ids[i] } : {}) }));
const req = (operation: WriteRequest['operation'], rows: WriteRow[], over: Partial<WriteRequest> = {}): WriteRequest => ({ object: 'Contact', operation, matchField: 'External_Id__c', rows, ...over });
const memoryCheckpoint = () => {
  const m = new Map<string, string>();
  const store: WriteCheckpoint & { m: Map<string, string> } = { m, get: async (k) => m.get(k), set: async (k, v) => void m.set(k, v) };
  return store;
};
const counts = () => ({ jobs: sf.count('jobsCreated'), uploads: sf.count('uploads'), collections: sf.count('collections') });

t.test('a 100,000-row upsert goes through one Bulk API 2.0 job, per-row errors on the right rows', async (t) => {
  const before = counts();
  const payloads: Record<string, unknown>[] = Array.from({ length: 100_000 }, (_, i) => ({ External_Id__c: `ext-${i}`, LastName: `Last ${i}`, Email: `u${i}@example.com` }));
  const bad = new Map<number, string>([
    [7, 'INVALID_EMAIL_ADDRESS'],
    [50_000, 'REQUIRED_FIELD_MISSING'],
    [99_999, 'INVALID_TYPE_ON_FIELD_IN_RECORD'],
  ]);
  payloads[7].Email = 'nope';
  payloads[50_000].LastName = null;
  payloads[99_999].Score__c = 'abc';
  const res = await open().write(req('upsert', rowsOf(payloads)));
  const after = counts();
  t.same({ jobs: after.jobs - before.jobs, uploads: after.uploads - before.uploads, collections: after.collections - before.collections }, { jobs: 1, uploads: 1, collections: 0 }, 'one job, one upload, not 500 collection calls');
  t.equal(res.results.length, 100_000);
  const rejected = new Map(res.results.flatMap((r, i) => (r.status === 'rejected' ? [[i, r.code] as const] : [])));
  t.same(rejected, bad);
  t.match(res.results[50_000], { message: 'Required fields are missing: [LastName]:LastName' });
  t.equal(sf.all('Contact').length, 99_997);
  // Results came back in another order than the upload's: each Id is still its own row's record.
  const store = sf.records.get('Contact')!;
  for (const i of [0, 1, 12_345, 99_998]) {
    const r = res.results[i];
    t.equal(r.status === 'succeeded' && store.get(r.externalId!)?.External_Id__c, `ext-${i}`);
  }
  const job = [...sf.jobs.values()][0];
  t.match(job, { operation: 'upsert', externalIdFieldName: 'External_Id__c', state: 'JobComplete' });
  t.ok(job.polls >= 2, 'polled until the job completed');
});

t.test('CSV escaping round-trips, null clears a field, updates and deletes go by Id', async (t) => {
  const d = open({ bulkThreshold: 1 });
  const tricky = ['comma, inside', 'quote " inside', 'line\nbreak', '  padded  ', 'ünïcødé ✓', '#hash', "'single'"];
  const ins = await d.write(req('insert', rowsOf(tricky.map((s, i) => ({ LastName: s, FirstName: `n${i}`, External_Id__c: `k${i}` })))));
  t.ok(ins.results.every((r) => r.status === 'succeeded'));
  const ids = ins.results.map((r) => (r.status === 'succeeded' ? r.externalId! : ''));
  t.same(ids.map((id) => sf.records.get('Contact')!.get(id)!.LastName), tricky, 'values survive CSV quoting exactly');
  const up = await d.write(req('update', rowsOf(tricky.map((_, i) => ({ FirstName: null, Email: i === 0 ? 'new@x.io' : undefined })), ids)));
  t.ok(up.results.every((r) => r.status === 'succeeded'));
  t.equal(sf.records.get('Contact')!.get(ids[0])!.FirstName, null, '#N/A cleared the field');
  t.equal(sf.records.get('Contact')!.get(ids[0])!.Email, 'new@x.io');
  t.equal(sf.records.get('Contact')!.get(ids[1])!.Email, undefined, 'an absent value leaves the field as it was');
  sf.records.get('Contact')!.delete(ids[6]);
  sf.deleted.add(ids[6]);
  const del = await d.write(req('delete', rowsOf(tricky.map(() => ({})), ids)));
  t.ok(del.results.every((r) => r.status === 'succeeded'), 'a record already deleted counts as deleted');
  t.equal(sf.all('Contact').length, 0);
  t.same([...sf.jobs.values()].map((j) => j.operation), ['insert', 'update', 'delete']);
});

t.test('a batch whose CSV exceeds the upload limit is split over several jobs', async (t) => {
  const before = counts();
  const payloads = Array.from({ length: 300 }, (_, i) => ({ External_Id__c: `ext-${i}`, LastName: `Last name number ${i}` }));
  const res = await open({ bulkThreshold: 1, bulkMaxUploadBytes: 4096 }).write(req('upsert', rowsOf(payloads)));
  t.ok(res.results.every((r) => r.status === 'succeeded'));
  const jobs = [...sf.jobs.values()];
  t.ok(jobs.length > 1 && jobs.length === counts().jobs - before.jobs, `${jobs.length} jobs`);
  t.ok(jobs.every((j) => Buffer.byteLength(j.csv ?? '') <= 4096), 'each upload within the limit');
  t.equal(sf.all('Contact').length, 300);
});

t.test('resume: a second write with the same checkpoint polls the same job and uploads nothing', async (t) => {
  const cp = memoryCheckpoint();
  const payloads = Array.from({ length: 500 }, (_, i) => ({ External_Id__c: `ext-${i}`, LastName: `L${i}` }));
  sf.holdBulk = true;
  const before = counts();
  const err = await expectCode(t, open({ bulkThreshold: 100, bulkTimeoutMs: 1000 }).write(req('upsert', rowsOf(payloads), { checkpoint: cp })), 'bulk_job_pending');
  t.equal(err.classification, 'retryable');
  t.equal(cp.m.size, 1, 'the job id was checkpointed');
  const jobId = [...cp.m.values()][0];
  t.equal(sf.jobs.get(jobId)?.state, 'InProgress');
  sf.onJobPoll = () => (sf.holdBulk = false);
  sf.log.length = 0;
  const res = await open({ bulkThreshold: 100 }).write(req('upsert', rowsOf(payloads), { checkpoint: cp }));
  t.ok(res.results.every((r) => r.status === 'succeeded'));
  const after = counts();
  t.same({ jobs: after.jobs - before.jobs, uploads: after.uploads - before.uploads }, { jobs: 1, uploads: 1 }, 'no second job, no second upload');
  t.notOk(sf.log.some((l) => l.method !== 'GET'), 'the second write only read');
  t.equal(sf.all('Contact').length, 500);
});

t.test('resume: a job left Open (killed before UploadComplete) is aborted and replaced', async (t) => {
  const cp = memoryCheckpoint();
  const dying: WriteCheckpoint = {
    get: cp.get,
    set: async (k, v) => {
      await cp.set(k, v);
      throw new Error('worker killed');
    },
  };
  const payloads = Array.from({ length: 20 }, (_, i) => ({ External_Id__c: `ext-${i}`, LastName: `L${i}` }));
  await t.rejects(open({ bulkThreshold: 1 }).write(req('upsert', rowsOf(payloads), { checkpoint: dying })));
  const first = [...cp.m.values()][0];
  t.equal(sf.jobs.get(first)?.state, 'Open');
  t.equal(sf.jobs.get(first)?.uploads, 0);
  const res = await open({ bulkThreshold: 1 }).write(req('upsert', rowsOf(payloads), { checkpoint: cp }));
  t.ok(res.results.every((r) => r.status === 'succeeded'));
  t.equal(sf.jobs.get(first)?.state, 'Aborted');
  t.equal(sf.jobs.size, 2);
  t.equal(sf.all('Contact').length, 20);
});

t.test('a job that fails as a whole is fatal with Salesforce\'s message; an aborted job leaves its rows retryable', async (t) => {
  const err = await expectCode(t, open({ bulkThreshold: 1 }).write(req('upsert', rowsOf([{ External_Id__c: 'a', LastName: 'A', Nope__c: 'x' }]))), 'bulk_job_failed');
  t.equal(err.classification, 'fatal');
  t.match(err.message, /InvalidBatch : Field name not found : Nope__c/);
  sf.holdBulk = true;
  sf.onJobPoll = (job) => {
    if (job.state === 'InProgress') {
      // Someone aborts the job in Setup while it runs.
      job.state = 'Aborted';
      job.header = ['External_Id__c', 'LastName'];
      job.unprocessed = [['a', 'A'], ['b', 'B']];
    }
  };
  const res = await open({ bulkThreshold: 1 }).write(req('upsert', rowsOf([{ External_Id__c: 'a', LastName: 'A' }, { External_Id__c: 'b', LastName: 'B' }])));
  t.match(res.results, [
    { status: 'rejected', code: 'not_processed', retryable: true },
    { status: 'rejected', code: 'not_processed', retryable: true },
  ]);
});

t.test('a worker killed (SIGKILL) while it polls a bulk job: the next worker polls the same job, no second upload', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bh-sf-bulk-'));
  const file = join(dir, 'checkpoint.json');
  const token = sf.issueToken();
  const n = 2000;
  sf.holdBulk = true;
  const before = counts();
  const child = spawn(process.execPath, [join(import.meta.dirname, 'fixtures/salesforce-bulk-writer.ts'), sf.url, token, file, String(n)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (c) => (stderr += c));
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, signal) => resolve(signal)));
  const polled = new Promise<void>((resolve) => {
    sf.onJobPoll = (job) => {
      if (job.state === 'InProgress') resolve();
    };
  });
  await Promise.race([polled, exited.then(() => Promise.reject(new Error(`child exited before polling: ${stderr}`)))]);
  child.kill('SIGKILL');
  t.equal(await exited, 'SIGKILL');
  const jobId = Object.values(JSON.parse(readFileSync(file, 'utf8')) as Record<string, string>)[0];
  t.equal(sf.jobs.get(jobId)?.state, 'InProgress', 'the job outlived its worker');
  t.equal(sf.all('Contact').length, 0);

  sf.onJobPoll = () => (sf.holdBulk = false);
  const store: WriteCheckpoint = {
    get: async (k) => (JSON.parse(readFileSync(file, 'utf8')) as Record<string, string>)[k],
    set: async () => {
      t.fail('the resumed write must not start a job');
    },
  };
  const rows = Array.from({ length: n }, (_, i) => ({ primaryKey: String(i), payload: { External_Id__c: `ext-${i}`, LastName: `Last ${i}` } }));
  const res = await open().write({ object: 'Contact', operation: 'upsert', matchField: 'External_Id__c', rows, checkpoint: store, bulkThreshold: 1 });
  t.ok(res.results.every((r) => r.status === 'succeeded'));
  const after = counts();
  t.same({ jobs: after.jobs - before.jobs, uploads: after.uploads - before.uploads }, { jobs: 1, uploads: 1 });
  t.equal(sf.all('Contact').length, n);
});
