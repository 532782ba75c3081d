import t from 'tap';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { startFakeCrm } from '../fakes/crm.ts';
import { runToEnd, setupSync } from '../helpers/sync-setup.ts';

const engine = { retryBaseMs: 5, retryMaxMs: 50, heartbeatMs: 200 };

t.test('upsert: first run sends every row, an unchanged run sends nothing, 1% changed sends only those', async (t) => {
  const h = await startTestBackhaul(t, { start: { worker: true, engine } });
  const crm = await startFakeCrm();
  t.teardown(() => crm.close());
  const { src, syncId } = await setupSync(t, h, crm.url, { rows: 1000 });

  const first = await runToEnd(h, syncId);
  t.equal(first.status, 'succeeded', JSON.stringify(first.error));
  t.same(first.counts, { queried: 1000, invalid: 0, planned: { insert: 1000, update: 0, delete: 0 }, succeeded: { insert: 1000, update: 0, delete: 0 }, rejected: { insert: 0, update: 0, delete: 0 } });
  t.equal(crm.contacts.size, 1000);
  t.same(crm.contacts.get('user7@example.com'), { email: 'user7@example.com', name: 'User 7', age: 27 });
  t.same(first.phases.map((p: { name: string }) => p.name), ['querying', 'diffing', 'delivering', 'finalizing']);
  t.ok(first.phases.every((p: { finishedAt: string | null }) => p.finishedAt), 'every phase finished');

  const before = crm.requests;
  const unchanged = await runToEnd(h, syncId);
  t.equal(unchanged.status, 'succeeded');
  t.same(unchanged.counts.planned, { insert: 0, update: 0, delete: 0 });
  t.equal(crm.requests, before, 'an unchanged run sends no request');

  await src`update src.people set name = name || ' (changed)' where id % 100 = 0`;
  crm.answeredBatches.length = 0;
  const changed = await runToEnd(h, syncId);
  t.same(changed.counts.planned, { insert: 0, update: 10, delete: 0 });
  t.same(changed.counts.succeeded, { insert: 0, update: 10, delete: 0 });
  const sent = crm.answeredBatches.flat().sort();
  t.same(sent, Array.from({ length: 10 }, (_, i) => `user${(i + 1) * 100}@example.com`).sort(), 'only the changed rows were sent');
  t.equal(crm.contacts.get('user100@example.com')!.name, 'User 100 (changed)');

  const records = await h.request('GET', `/v1/runs/${changed.id}/records?status=succeeded&limit=200`);
  t.equal(records.body.data.length, 10);
  t.ok(records.body.data.every((r: { operation: string }) => r.operation === 'update'));
  const history = await h.request('GET', `/v1/syncs/${syncId}/records/100`);
  t.same(history.body.data.map((r: { runId: string; operation: string }) => [r.runId, r.operation]), [[changed.id, 'update'], [first.id, 'insert']]);
});

t.test('mirror deletes rows that left the model; upsert does not', async (t) => {
  const h = await startTestBackhaul(t, { start: { worker: true, engine } });
  const crm = await startFakeCrm();
  t.teardown(() => crm.close());
  const up = await setupSync(t, h, crm.url, { rows: 100, mode: 'upsert', slug: 'up' });
  await runToEnd(h, up.syncId);
  await up.src`delete from src.people where id <= 5`;
  const r = await runToEnd(h, up.syncId);
  t.same(r.counts.planned, { insert: 0, update: 0, delete: 0 }, 'upsert never deletes');
  t.equal(crm.contacts.size, 100);

  // Changing the mode starts a new snapshot: the mirror sync deletes only what it wrote itself.
  const mirror = await h.request('PATCH', `/v1/syncs/${up.syncId}`, { body: { mode: 'mirror' } });
  t.equal(mirror.status, 200);
  t.ok(mirror.body.snapshotResetAt, 'the response says a new snapshot started');
  const fresh = await runToEnd(h, up.syncId);
  t.equal(fresh.status, 'succeeded', JSON.stringify(fresh.error));
  t.same(fresh.counts.planned, { insert: 95, update: 0, delete: 0 }, 'a new snapshot: every row written, nothing deleted');
  t.equal(crm.contacts.size, 100, 'records written before the mode change are not the mirror sync\'s to delete');
  await up.src`delete from src.people where id <= 10`;
  const m = await runToEnd(h, up.syncId);
  t.equal(m.status, 'succeeded', JSON.stringify(m.error));
  t.same(m.counts.planned, { insert: 0, update: 0, delete: 5 });
  t.same(m.counts.succeeded, { insert: 0, update: 0, delete: 5 });
  t.equal(crm.contacts.size, 95);
  t.notOk(crm.contacts.has('user8@example.com'));
  t.ok(crm.contacts.has('user3@example.com'), 'a record the mirror sync never wrote is left alone');
  const again = await runToEnd(h, up.syncId);
  t.same(again.counts.planned, { insert: 0, update: 0, delete: 0 }, 'deleted rows left the snapshot');
});

t.test('insert mode sends only new rows; update mode only rows the destination has', async (t) => {
  const h = await startTestBackhaul(t, { start: { worker: true, engine } });
  const crm = await startFakeCrm();
  t.teardown(() => crm.close());
  const s = await setupSync(t, h, crm.url, { rows: 20, mode: 'insert', slug: 'ins' });
  const first = await runToEnd(h, s.syncId);
  t.same(first.counts.succeeded, { insert: 20, update: 0, delete: 0 });
  await s.src`update src.people set name = 'Changed' where id = 1`;
  await s.src`insert into src.people values (21, 'user21@example.com', 'User 21', 30)`;
  const second = await runToEnd(h, s.syncId);
  t.same(second.counts.planned, { insert: 1, update: 0, delete: 0 }, 'insert mode ignores changes');
  t.equal(crm.contacts.get('user1@example.com')!.name, 'User 1');

  await h.request('PATCH', `/v1/syncs/${s.syncId}`, { body: { mode: 'update' } });
  crm.contacts.delete('user2@example.com'); // the destination lost a record
  await s.src`update src.people set name = 'Changed' where id in (1, 2)`;
  const upd = await runToEnd(h, s.syncId);
  t.equal(upd.status, 'partially_succeeded');
  // The mode change started a new snapshot: every row is sent as an update by match key.
  t.same(upd.counts.succeeded, { insert: 0, update: 20, delete: 0 });
  t.same(upd.counts.rejected, { insert: 0, update: 1, delete: 0 });
  t.equal(crm.contacts.get('user1@example.com')!.name, 'Changed');
  t.notOk(crm.contacts.has('user2@example.com'), 'update mode never creates');
  const rej = await h.request('GET', `/v1/runs/${upd.id}/records?status=rejected`);
  t.same(rej.body.data.map((r: any) => [r.primaryKey, r.error.message]), [['2', 'contact user2@example.com does not exist']]);
  await s.src`update src.people set name = 'Again' where id = 3`;
  const next = await runToEnd(h, s.syncId);
  t.same(next.counts.planned, { insert: 0, update: 2, delete: 0 }, 'then only the changed row and the rejected one');
});

t.test('full resync sends every row again', async (t) => {
  const h = await startTestBackhaul(t, { start: { worker: true, engine } });
  const crm = await startFakeCrm();
  t.teardown(() => crm.close());
  const s = await setupSync(t, h, crm.url, { rows: 30 });
  await runToEnd(h, s.syncId);
  const full = await runToEnd(h, s.syncId, { fullResync: true });
  t.equal(full.fullResync, true);
  t.same(full.counts.planned, { insert: 0, update: 30, delete: 0 });
  t.equal([...crm.applied.values()].reduce((a, b) => a + b, 0), 60);
});

t.test('invalid rows are recorded with their reason and not sent', async (t) => {
  const h = await startTestBackhaul(t, { start: { worker: true, engine } });
  const crm = await startFakeCrm();
  t.teardown(() => crm.close());
  const s = await setupSync(t, h, crm.url, { rows: 10 });
  // `age` is an integer field in the destination: a non-numeric value cannot be coerced.
  await s.src`alter table src.people alter column age type text`;
  await s.src`update src.people set age = 'old' where id = 3`;
  const r = await runToEnd(h, s.syncId);
  t.equal(r.status, 'partially_succeeded');
  t.equal(r.counts.invalid, 1);
  t.equal(r.counts.succeeded.insert, 9);
  t.notOk(crm.contacts.has('user3@example.com'));
  const inv = await h.request('GET', `/v1/runs/${r.id}/records?status=invalid`);
  t.equal(inv.body.data.length, 1);
  t.equal(inv.body.data[0].primaryKey, '3');
  t.match(inv.body.data[0].error.message, /age/);
});
