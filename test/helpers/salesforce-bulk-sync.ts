import type { Test } from 'tap';
import postgres from 'postgres';
import { startFakeSalesforce } from '../fakes/salesforce.ts';
import { startTestBackhaul } from './backhaul.ts';
import { runToEnd } from './sync-setup.ts';

// PostgreSQL → Salesforce through the engine (issue 14), at a size of the caller's: the full run
// goes through one Bulk API 2.0 job; the Ids Salesforce returned are kept in the snapshot and shown
// in the run records; a 1% change then goes through sObject Collections addressing each record by
// its Id; mirror deletes address records by Id too. `rows` must be a multiple of 100.
// test/engine/salesforce-sync.test.ts runs it at 5,000 rows (npm test), test/chaos/salesforce-100k.test.ts
// at 100,000.

const engine = { retryBaseMs: 5, retryMaxMs: 50, heartbeatMs: 200 };

export async function salesforceBulkSync(t: Test, ROWS: number): Promise<void> {
  // The default threshold (10,000 rows), or all the rows of a smaller run: the full run goes
  // through Bulk API 2.0 and the 1% change below it.
  const BULK_THRESHOLD = Math.min(ROWS, 10_000);
  const h = await startTestBackhaul(t, { start: { worker: true, engine } });
  const sf = await startFakeSalesforce();
  t.teardown(() => sf.close());
  const src = postgres(h.databaseUrl, { max: 2, onnotice: () => {} });
  t.teardown(() => src.end());
  await src`create schema src`;
  await src`create table src.contacts (id int primary key, ext text, last_name text, email text)`;
  await src`insert into src.contacts select i, 'ext-' || i, 'Last ' || i, 'u' || i || '@example.com' from generate_series(1, ${ROWS}::int) i`;
  const u = new URL(h.databaseUrl);
  const ok = async (p: Promise<{ status: number; body: any }>) => {
    const r = await p;
    if (r.status >= 300) throw new Error(`${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  };
  const db = await ok(h.request('POST', '/v1/connections', { body: { slug: 'wh', name: 'Warehouse', type: 'postgres', config: { host: u.hostname, port: Number(u.port), database: u.pathname.slice(1), user: decodeURIComponent(u.username) }, secrets: { password: decodeURIComponent(u.password) } } }));
  await ok(h.request('POST', '/v1/connections', { body: { slug: 'sf', name: 'Salesforce', type: 'salesforce', config: { instanceUrl: sf.url, bulkThreshold: BULK_THRESHOLD, bulkPollIntervalMs: 5, bulkPollMaxIntervalMs: 20 }, secrets: { accessToken: sf.issueToken() } } }));
  await ok(h.request('POST', '/v1/models', { body: { slug: 'contacts', name: 'Contacts', connectionId: db.id, sql: 'select id, ext, last_name, email from src.contacts', primaryKey: 'id' } }));
  const sync = await ok(
    h.request('POST', '/v1/syncs', {
      body: {
        slug: 'contacts-to-sf',
        name: 'Contacts to Salesforce',
        modelId: 'contacts',
        destinationId: 'sf',
        object: 'Contact',
        mode: 'mirror',
        matchKey: { sourceColumn: 'ext', destinationField: 'External_Id__c' },
        delivery: { batchSize: 200, maxRetries: 5 },
      },
    }),
  );
  await ok(
    h.request('PUT', `/v1/syncs/${sync.id}/mappings`, {
      body: [
        { destinationField: 'External_Id__c', source: { column: 'ext' } },
        { destinationField: 'LastName', source: { column: 'last_name' } },
        { destinationField: 'Email', source: { column: 'email' } },
      ],
    }),
  );
  const c0 = { jobs: sf.count('jobsCreated'), collections: sf.count('collections') };
  const first = await runToEnd(h, sync.id, {}, 300_000);
  t.equal(first.status, 'succeeded', JSON.stringify(first.error));
  t.same(first.counts.succeeded, { insert: ROWS, update: 0, delete: 0 });
  t.same({ jobs: sf.count('jobsCreated') - c0.jobs, collections: sf.count('collections') - c0.collections }, { jobs: 1, collections: 0 }, 'one bulk job, no collection calls');
  t.equal(sf.all('Contact').length, ROWS);
  const rec = await h.request('GET', `/v1/runs/${first.id}/records?primaryKey=7`);
  const id7 = rec.body.data[0].recordId;
  t.ok(id7, 'the record shows the Id Salesforce returned');
  t.equal(sf.records.get('Contact')!.get(id7)?.External_Id__c, 'ext-7');

  // 1% changed: below the bulk threshold, through sObject Collections, by Id.
  await src`update src.contacts set last_name = last_name || ' (changed)' where id % 100 = 0`;
  sf.log.length = 0;
  const second = await runToEnd(h, sync.id, {}, 120_000);
  t.same(second.counts.succeeded, { insert: 0, update: ROWS / 100, delete: 0 });
  t.equal(sf.count('jobsCreated') - c0.jobs, 1, 'no second bulk job');
  t.ok(sf.log.some((l) => /sobjects/.test(JSON.stringify(l))), 'sent through sObject Collections');
  t.equal(sf.all('Contact').filter((c) => String(c.LastName).endsWith('(changed)')).length, ROWS / 100);

  // Mirror deletes address the record by its Id.
  await src`delete from src.contacts where id = 7`;
  const third = await runToEnd(h, sync.id, {}, 120_000);
  t.same(third.counts.succeeded, { insert: 0, update: 0, delete: 1 });
  t.notOk(sf.records.get('Contact')!.has(id7), 'the record with that Id is gone');
  t.equal(sf.all('Contact').length, ROWS - 1);
}
