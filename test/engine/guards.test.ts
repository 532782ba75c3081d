import t from 'tap';
import { startFakeCrm } from '../fakes/crm.ts';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { crmOpts, engine, identityFixture as fixture, setRows } from '../helpers/identity-fixture.ts';
import { runToEnd, setupSync } from '../helpers/sync-setup.ts';

// Change thresholds, re-pointing, unrecordable values, delete ordering and dry runs (issue 12):
// a CRM keyed by email, compared case-insensitively, fed by a PostgreSQL table.

t.test('an empty model fails the deletion guard before sending; allowDeletions lets one run through', async (t) => {
  const f = await fixture(t, 'mirror', [
    [1, 'ada@example.com', 'Ada'],
    [2, 'alan@example.com', 'Alan'],
  ]);
  await runToEnd(f.h, f.syncId);
  const requests = f.crm.requests;
  await setRows(f.src, []);
  const r = await runToEnd(f.h, f.syncId);
  t.equal(r.status, 'failed');
  t.equal(r.error.code, 'deletion_guard');
  t.match(r.error.hint, /allowDeletions/);
  t.equal(f.crm.requests, requests, 'nothing was sent');
  t.equal(f.crm.contacts.size, 2);
  const again = await runToEnd(f.h, f.syncId);
  t.equal(again.error?.code, 'deletion_guard', 'the snapshot was untouched: it fails again');
  const allowed = await runToEnd(f.h, f.syncId, { allowDeletions: true });
  t.equal(allowed.status, 'succeeded', JSON.stringify(allowed.error));
  t.equal(allowed.allowDeletions, true);
  t.equal(f.crm.contacts.size, 0);
});

t.test('numeric change thresholds: deletes and changes beyond the limits fail before sending', async (t) => {
  const rows: [number, string, string][] = Array.from({ length: 10 }, (_, i) => [i + 1, `u${i + 1}@example.com`, `U${i + 1}`]);
  const f = await fixture(t, 'mirror', rows, { changeThresholds: { maxDeletePercent: 20 } });
  await runToEnd(f.h, f.syncId);
  await setRows(f.src, rows.slice(3));
  const r = await runToEnd(f.h, f.syncId);
  t.equal(r.error?.code, 'deletion_guard');
  t.match(r.error.message, /30%/);
  t.equal(f.crm.contacts.size, 10);
  const patched = await f.h.request('PATCH', `/v1/syncs/${f.syncId}`, { body: { changeThresholds: { maxDeletePercent: 50, maxChanges: 2 } } });
  t.same(patched.body.changeThresholds, { maxDeletes: null, maxDeletePercent: 50, maxChanges: 2, maxChangePercent: null, allowEmptyModel: false });
  const c = await runToEnd(f.h, f.syncId);
  t.equal(c.error?.code, 'change_guard', '3 deletes are within 50% but over 2 changes');
  await f.h.request('PATCH', `/v1/syncs/${f.syncId}`, { body: { changeThresholds: { maxChanges: null } } });
  const ok = await runToEnd(f.h, f.syncId);
  t.equal(ok.status, 'succeeded');
  t.equal(f.crm.contacts.size, 7);
});

t.test('re-pointing a sync starts a new snapshot: the new destination gets every row', async (t) => {
  const f = await fixture(t, 'mirror', [
    [1, 'ada@example.com', 'Ada'],
    [2, 'alan@example.com', 'Alan'],
  ]);
  await runToEnd(f.h, f.syncId);
  const other = await startFakeCrm({}, crmOpts);
  t.teardown(() => other.close());
  const { crmConnectionConfig } = await import('../fakes/crm.ts');
  const dest2 = await f.h.request('POST', '/v1/connections', { body: { slug: 'crm-2', name: 'CRM 2', type: 'http', config: crmConnectionConfig(other.url, crmOpts) } });
  t.equal(dest2.status, 201);
  const patched = await f.h.request('PATCH', `/v1/syncs/${f.syncId}`, { body: { destinationId: 'crm-2' } });
  t.equal(patched.status, 200);
  t.ok(patched.body.snapshotResetAt, 'the response says a new snapshot started');
  const audit = await f.h.request('GET', `/v1/audit-events?resourceId=${f.syncId}`);
  t.ok(audit.body.data.some((e: { changes?: string[]; changedFields?: string[] }) => JSON.stringify(e).includes('snapshot')), 'the audit event says so');
  const r = await runToEnd(f.h, f.syncId);
  t.same(r.counts.planned, { insert: 2, update: 0, delete: 0 });
  t.equal(other.contacts.size, 2, 'the new destination has the data');
  // Changing only the name keeps the snapshot.
  const renamed = await f.h.request('PATCH', `/v1/syncs/${f.syncId}`, { body: { name: 'Renamed' } });
  t.equal(renamed.body.snapshotResetAt, patched.body.snapshotResetAt);
  t.same((await runToEnd(f.h, f.syncId)).counts.planned, { insert: 0, update: 0, delete: 0 });
});

t.test('U+0000 and lone surrogates from the model: invalid before sending, the rest delivered, recorded once', async (t) => {
  const h = await startTestBackhaul(t, { start: { worker: true, engine } });
  const crm = await startFakeCrm({}, crmOpts);
  t.teardown(() => crm.close());
  const s = await setupSync(t, h, crm.url, { mode: 'upsert', crm: crmOpts, rows: 3 });
  // PostgreSQL text cannot hold U+0000, but json can carry \u0000 and lone-surrogate escapes,
  // which decode to exactly those characters in JavaScript.
  await h.request('PATCH', `/v1/models/people`, {
    body: { sql: `select id, email, case when id = 1 then '"a\\u0000b"'::json when id = 2 then '"x\\ud800y"'::json else '"ok"'::json end as name, age from src.people` },
  });
  await h.request('PUT', `/v1/syncs/${s.syncId}/mappings`, {
    body: [
      { destinationField: 'email', source: { column: 'email' } },
      { destinationField: 'name', source: { column: 'name' } },
    ],
  });
  const r = await runToEnd(h, s.syncId);
  t.equal(r.status, 'partially_succeeded', JSON.stringify(r.error));
  t.equal(r.counts.invalid, 2);
  t.same(r.counts.succeeded, { insert: 1, update: 0, delete: 0 });
  t.same([...crm.contacts.keys()], ['user3@example.com'], 'only the recordable row was sent');
  const recs = await h.request('GET', `/v1/runs/${r.id}/records?status=invalid`);
  t.same(recs.body.data.map((x: { primaryKey: string; error: { code: string } }) => [x.primaryKey, x.error.code]), [
    ['1', 'unrecordable_value'],
    ['2', 'unrecordable_value'],
  ]);
  const again = await runToEnd(h, s.syncId);
  t.same(again.counts.planned, { insert: 0, update: 0, delete: 0 }, 'the delivered row is not sent again');
});

t.test('deletes are sent only after every write of the run was acknowledged', async (t) => {
  const rows: [number, string, string][] = Array.from({ length: 40 }, (_, i) => [i + 1, `u${i + 1}@example.com`, `U${i + 1}`]);
  const f = await fixture(t, 'mirror', rows, { delivery: { batchSize: 5, concurrency: 4 } });
  await runToEnd(f.h, f.syncId);
  const order: string[] = [];
  f.crm.onBatch = async () => {
    order.push('write:start');
    await new Promise((r) => setImmediate(r));
    order.push('write:end');
  };
  f.crm.onDelete = () => order.push('delete');
  await setRows(f.src, [...rows.slice(10).map(([id, e, n]) => [id, e, `${n} changed`] as [number, string, string])]);
  const r = await runToEnd(f.h, f.syncId);
  t.equal(r.status, 'succeeded', JSON.stringify(r.error));
  t.same(r.counts.planned, { insert: 0, update: 30, delete: 10 });
  const firstDelete = order.indexOf('delete');
  t.ok(firstDelete > order.lastIndexOf('write:end'), 'the first delete came after the last write was answered');
});

t.test('dry run: counts and sample payloads, nothing sent, snapshot untouched', async (t) => {
  const f = await fixture(t, 'mirror', [
    [1, 'ada@example.com', 'Ada'],
    [2, 'alan@example.com', 'Alan'],
  ]);
  await runToEnd(f.h, f.syncId);
  await setRows(f.src, [
    [1, 'ada@example.com', 'Ada L.'],
    [3, 'grace@example.com', 'Grace'],
    [4, null, 'Nobody'],
  ]);
  const requests = f.crm.requests;
  const dry = await runToEnd(f.h, f.syncId, { dryRun: true });
  t.equal(dry.dryRun, true);
  t.equal(dry.status, 'partially_succeeded', 'one row would be invalid');
  t.same(dry.counts.planned, { insert: 1, update: 1, delete: 1 });
  t.same(dry.counts.succeeded, { insert: 0, update: 0, delete: 0 });
  t.equal(f.crm.requests, requests, 'nothing was sent');
  t.same(
    dry.sample.map((x: { primaryKey: string; operation: string }) => [x.operation, x.primaryKey]),
    [
      ['update', '1'],
      ['insert', '3'],
      ['delete', '2'],
    ],
  );
  t.same(dry.sample[0].payload, { email: 'ada@example.com', name: 'Ada L.', age: 30 });
  const recs = await f.h.request('GET', `/v1/runs/${dry.id}/records?status=invalid`);
  t.equal(recs.body.data[0].error.code, 'missing_match_value');
  const real = await runToEnd(f.h, f.syncId);
  t.same(real.counts.planned, { insert: 1, update: 1, delete: 1 }, 'the snapshot was untouched by the dry run');
});
