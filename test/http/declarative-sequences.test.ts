import t from 'tap';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { controlDb, httpConnection, MODEL_SQL, newWorkspace, ok, pgConnection } from '../helpers/http-fixtures.ts';

// Sequences in declarative bundles: exported with their steps' syncs by slug, applied to a fresh
// workspace after the syncs they run, a second apply is a no-op, a step change is one update, and
// prune deletes a sequence before the sync it runs (a sync in a sequence cannot be deleted).

const sync = (slug: string) => ({
  slug,
  name: slug,
  modelId: 'users',
  destinationId: 'crm',
  object: 'contacts',
  mode: 'upsert',
  matchKey: { sourceColumn: 'email', destinationField: 'email' },
  mappings: [{ destinationField: 'firstname', source: { column: 'first_name' } }],
});

t.test('sequences: export → apply fresh → no-op → one step change → prune sequence then its sync', async (t) => {
  const h = await startTestBackhaul(t);
  const sql = controlDb(h);
  t.teardown(() => sql.end());
  await ok(h.request('POST', '/v1/connections', { body: pgConnection('wh') }));
  await ok(h.request('POST', '/v1/connections', { body: httpConnection('crm', { secrets: { token: { env: 'CRM_TOKEN' } } }) }));
  await ok(h.request('POST', '/v1/models?validate=false', { body: { slug: 'users', name: 'Users', connectionId: 'wh', sql: MODEL_SQL, primaryKey: 'id' } }));
  await ok(h.request('POST', '/v1/syncs', { body: sync('a') }));
  await ok(h.request('POST', '/v1/syncs', { body: sync('b') }));
  await ok(
    h.request('POST', '/v1/sequences', {
      body: { slug: 'nightly', name: 'Nightly', steps: [{ syncId: 'a' }, { syncId: 'b' }], schedule: { type: 'cron', expression: '0 2 * * *' }, onFailure: 'continue', enabled: false },
    }),
  );

  const exported = await ok(h.request('GET', '/v1/export'), 200);
  t.same(exported.sequences, [
    { slug: 'nightly', name: 'Nightly', steps: [{ syncId: 'a' }, { syncId: 'b' }], schedule: { type: 'cron', expression: '0 2 * * *', timezone: 'UTC' }, onFailure: 'continue', enabled: false },
  ]);
  t.same((await ok(h.request('POST', '/v1/plan', { body: exported }), 200)).changes, [], 'the same workspace: nothing to do');

  // A fresh workspace: the sequence is created after the syncs it runs.
  const ws = await newWorkspace(h, 'decl-seq');
  const plan = await ok(h.request('POST', '/v1/plan', { body: exported, token: ws.token }), 200);
  t.same(plan.changes.map((c: any) => `${c.action} ${c.kind} ${c.slug}`), [
    'create connection crm',
    'create connection wh',
    'create model users',
    'create sync a',
    'create sync b',
    'create sequence nightly',
  ]);
  await ok(h.request('POST', '/v1/apply', { body: exported, token: ws.token, headers: { 'if-match': plan.planHash } }), 200);
  const seq = await ok(h.request('GET', '/v1/sequences/nightly', { token: ws.token }), 200);
  t.match(seq, { version: 1, onFailure: 'continue', enabled: false, steps: [{ syncSlug: 'a' }, { syncSlug: 'b' }] });
  t.same(await ok(h.request('GET', '/v1/export', { token: ws.token }), 200), exported, 'the fresh workspace exports the same bundle');

  // Second apply: nothing written, no version bump, no audit event.
  const audits = async () => (await sql`select count(*)::int as n from audit_events where workspace_id = ${ws.id}`)[0].n as number;
  const a0 = await audits();
  t.same((await ok(h.request('POST', '/v1/apply', { body: exported, token: ws.token }), 200)).applied, []);
  t.equal((await ok(h.request('GET', '/v1/sequences/nightly', { token: ws.token }), 200)).version, 1);
  t.equal(await audits(), a0, 'no audit event');

  // One step changed: one update, field by field; applied, the version moves once.
  const changed = structuredClone(exported);
  changed.sequences[0].steps = [{ syncId: 'b' }, { syncId: 'a' }];
  const one = await ok(h.request('POST', '/v1/plan', { body: changed, token: ws.token }), 200);
  t.equal(one.changes.length, 1, JSON.stringify(one.changes));
  t.match(one.changes[0], { action: 'update', kind: 'sequence', slug: 'nightly', expectedVersion: 1, bundlePath: '/sequences/0' });
  t.same(one.changes[0].fields, [{ field: 'steps', before: [{ syncId: 'a' }, { syncId: 'b' }], after: [{ syncId: 'b' }, { syncId: 'a' }] }]);
  const applied = await ok(h.request('POST', '/v1/apply', { body: changed, token: ws.token, headers: { 'if-match': one.planHash } }), 200);
  t.same(applied.applied.map((x: any) => [x.kind, x.version]), [['sequence', 2]]);
  t.match(await ok(h.request('GET', '/v1/sequences/nightly', { token: ws.token }), 200), { version: 2, steps: [{ syncSlug: 'b' }, { syncSlug: 'a' }] });
  t.equal(await audits(), a0 + 1, 'one audit event');
  t.same((await ok(h.request('POST', '/v1/plan', { body: changed, token: ws.token }), 200)).changes, [], 'applied: nothing left');

  // A step naming a sync neither in the bundle nor in the workspace: 422 with the path.
  const bad = structuredClone(changed);
  bad.sequences[0].steps[1].syncId = 'nope';
  const refused = await h.request('POST', '/v1/plan', { body: bad, token: ws.token });
  t.equal(refused.status, 422, refused.text);
  t.equal(refused.body.code, 'bundle_reference_unknown');
  t.same(refused.body.errors.map((e: any) => e.path), ['/sequences/0/steps/1/syncId']);

  // A sync in a sequence cannot be deleted on its own (the reason prune orders deletes)...
  const inUse = await h.request('DELETE', '/v1/syncs/b', { token: ws.token });
  t.equal(inUse.status, 409, inUse.text);
  t.equal(inUse.body.code, 'resource_in_use');
  // ...but prune deletes the sequence and then its sync, in one apply.
  const pruned = { ...structuredClone(changed), prune: true, sequences: [], syncs: changed.syncs.filter((s: any) => s.slug === 'a') };
  const pp = await ok(h.request('POST', '/v1/plan', { body: pruned, token: ws.token }), 200);
  t.same(pp.changes.map((c: any) => `${c.action} ${c.kind} ${c.slug}`), ['delete sequence nightly', 'delete sync b']);
  await ok(h.request('POST', '/v1/apply', { body: pruned, token: ws.token, headers: { 'if-match': pp.planHash } }), 200);
  const after = await ok(h.request('GET', '/v1/export', { token: ws.token }), 200);
  t.same(after.sequences, []);
  t.same(after.syncs.map((s: any) => s.slug), ['a']);
});
