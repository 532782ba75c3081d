import t from 'tap';
import { startFakeCrm } from '../fakes/crm.ts';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { crmOpts, engine, identityFixture as fixture, setRows } from '../helpers/identity-fixture.ts';
import { runToEnd, setupSync } from '../helpers/sync-setup.ts';

// Destination identity, deletion guards and re-pointing (issue 12): a CRM keyed by email,
// compared case-insensitively, fed by a PostgreSQL table. Each case is one that failed before.

t.test('a row re-created under a new primary key keeps its destination record (mirror)', async (t) => {
  const f = await fixture(t, 'mirror', [
    [1, 'ada@example.com', 'Ada'],
    [2, 'alan@example.com', 'Alan'],
  ]);
  t.equal((await runToEnd(f.h, f.syncId)).status, 'succeeded');
  await setRows(f.src, [
    [2, 'alan@example.com', 'Alan'],
    [3, 'ada@example.com', 'Ada'],
  ]);
  const r = await runToEnd(f.h, f.syncId);
  t.equal(r.status, 'succeeded', JSON.stringify(r.error));
  t.same(r.counts.planned, { insert: 0, update: 1, delete: 0 }, 'the record changed hands: one update, no delete');
  t.same(f.crm.deleted, [], 'nothing deleted');
  t.ok(f.crm.contacts.has('ada@example.com'), 'Ada is still in the destination');
  const again = await runToEnd(f.h, f.syncId);
  t.same(again.counts.planned, { insert: 0, update: 0, delete: 0 }, 'the next run sends nothing');
  // The same in another case: the destination compares emails case-insensitively.
  await setRows(f.src, [
    [2, 'alan@example.com', 'Alan'],
    [4, ' ADA@Example.com', 'Ada'],
  ]);
  const cased = await runToEnd(f.h, f.syncId);
  t.same(cased.counts.planned, { insert: 0, update: 1, delete: 0 });
  t.same(f.crm.deleted, [], 'a case variant never deletes the record it names');
  t.equal(f.crm.contacts.size, 2);
});

t.test('a match value that moves: mirror deletes the old record, upsert keeps it', async (t) => {
  for (const mode of ['mirror', 'upsert']) {
    await t.test(mode, async (t) => {
      const f = await fixture(t, mode, [
        [1, 'ada@old.example', 'Ada'],
        [2, 'alan@example.com', 'Alan'],
      ]);
      await runToEnd(f.h, f.syncId);
      await setRows(f.src, [
        [1, 'ada@new.example', 'Ada'],
        [2, 'alan@example.com', 'Alan'],
      ]);
      const r = await runToEnd(f.h, f.syncId);
      t.equal(r.status, 'succeeded', JSON.stringify(r.error));
      t.ok(f.crm.contacts.has('ada@new.example'));
      if (mode === 'mirror') {
        t.same(r.counts.planned, { insert: 1, update: 0, delete: 1 });
        t.same([...f.crm.contacts.keys()].sort(), ['ada@new.example', 'alan@example.com'], 'two records for two rows');
        const hist = await f.h.request('GET', `/v1/syncs/${f.syncId}/records/1`);
        t.same(hist.body.data.filter((x: { runId: string }) => x.runId === r.id).map((x: { operation: string }) => x.operation).sort(), ['delete', 'insert'], "the row's history shows both");
      } else {
        t.same(r.counts.planned, { insert: 1, update: 0, delete: 0 });
        t.ok(f.crm.contacts.has('ada@old.example'), 'upsert leaves the old record');
      }
      const again = await runToEnd(f.h, f.syncId);
      t.same(again.counts.planned, { insert: 0, update: 0, delete: 0 });
    });
  }
});

t.test('two rows claiming one record are both invalid, naming each other; the record is kept', async (t) => {
  const f = await fixture(t, 'mirror', [
    [1, 'ada@example.com', 'Ada'],
    [2, 'alan@example.com', 'Alan'],
  ]);
  await runToEnd(f.h, f.syncId);
  await setRows(f.src, [
    [1, 'ada@example.com', 'Ada'],
    [2, 'alan@example.com', 'Alan'],
    [3, 'Ada@Example.com', 'Ada Again'],
  ]);
  const r = await runToEnd(f.h, f.syncId);
  t.equal(r.status, 'partially_succeeded');
  t.equal(r.counts.invalid, 2);
  t.same(r.counts.planned, { insert: 0, update: 0, delete: 0 }, 'nothing sent for them, and their record not deleted');
  t.equal(f.crm.contacts.get('ada@example.com')!.name, 'Ada', 'no silent overwrite');
  const recs = await f.h.request('GET', `/v1/runs/${r.id}/records?status=invalid`);
  const byPk = Object.fromEntries(recs.body.data.map((x: { primaryKey: string; error: { code: string; message: string } }) => [x.primaryKey, x.error]));
  t.equal(byPk['1'].code, 'duplicate_match_value');
  t.match(byPk['1'].message, /"3"/, 'row 1 names row 3');
  t.match(byPk['3'].message, /"1"/, 'row 3 names row 1');
  // The conflict resolved: row 3 leaves; row 1 is written again only if it changed.
  await setRows(f.src, [
    [1, 'ada@example.com', 'Ada'],
    [2, 'alan@example.com', 'Alan'],
  ]);
  const fixed = await runToEnd(f.h, f.syncId);
  t.equal(fixed.status, 'succeeded');
  t.same(f.crm.deleted, [], 'nothing was ever deleted');
});

