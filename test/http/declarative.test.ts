import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, stringify } from 'yaml';
import { startTestBackhaul, type TestBackhaul } from '../helpers/backhaul.ts';
import { controlDb, httpConnection, MODEL_SQL, newKey, newWorkspace, ok, pgConnection } from '../helpers/http-fixtures.ts';

// Declarative configuration, Terraform-style, against a real server: export a workspace, apply the
// bundle to a fresh one, apply again (nothing moves), change one field (one update), detect a
// secret changed behind the bundle's back, prune, refuse a bad bundle with nothing applied, and the
// CLI doing the same with a YAML file.

const BIN = fileURLToPath(new URL('../../bin/backhaul.js', import.meta.url));
const LITERAL = 'decl-literal-token-5c1d9e';

/** Workspace `default`: every kind of resource, referring to each other. */
async function seed(h: TestBackhaul) {
  await ok(h.request('POST', '/v1/connections', { body: pgConnection('wh') }));
  await ok(h.request('POST', '/v1/connections', { body: httpConnection('crm', { secrets: { token: { env: 'CRM_TOKEN' } } }) }));
  await ok(h.request('POST', '/v1/alert-channels', { body: { slug: 'ops', name: 'Ops', type: 'webhook', config: { url: 'http://127.0.0.1:9/alerts' } } }));
  await ok(h.request('POST', '/v1/models?validate=false', { body: { slug: 'users', name: 'Users', connectionId: 'wh', sql: MODEL_SQL, primaryKey: 'id' } }));
  await ok(
    h.request('POST', '/v1/syncs', {
      body: {
        slug: 'users-to-crm',
        name: 'Users to CRM',
        modelId: 'users',
        destinationId: 'crm',
        object: 'contacts',
        mode: 'upsert',
        matchKey: { sourceColumn: 'email', destinationField: 'email' },
        schedule: { type: 'cron', expression: '0 6 * * 1-5' },
        alerts: { channelIds: ['ops'], rowFailurePercent: 5 },
        mappings: [
          { destinationField: 'firstname', source: { column: 'first_name' } },
          { destinationField: 'lastname', source: { static: 'Doe' } },
        ],
      },
    }),
  );
  await ok(h.request('POST', '/v1/webhook-endpoints', { body: { slug: 'hooks', name: 'Hooks', url: 'http://127.0.0.1:9/wh', events: ['run.completed'], syncIds: ['users-to-crm'] } }));
}

/** Every resource's version and the audit events of a workspace: what a no-op must leave alone. */
async function footprint(sql: ReturnType<typeof controlDb>, workspaceId: string) {
  const versions = await sql`
    select id, version from connections where workspace_id = ${workspaceId}
    union all select id, version from alert_channels where workspace_id = ${workspaceId}
    union all select id, version from models where workspace_id = ${workspaceId}
    union all select id, version from syncs where workspace_id = ${workspaceId}
    union all select id, version from mappings where workspace_id = ${workspaceId}
    union all select id, version from webhook_endpoints where workspace_id = ${workspaceId}
    order by id`;
  const [{ n }] = await sql`select count(*)::int as n from audit_events where workspace_id = ${workspaceId}`;
  return { versions: versions.map((r) => `${r.id}@${r.version}`), audits: n as number };
}

t.test('export → apply to a fresh workspace → apply again changes nothing; one field, one update; secrets; prune; refusals', async (t) => {
  const h = await startTestBackhaul(t);
  const sql = controlDb(h);
  t.teardown(() => sql.end());
  await seed(h);

  // Export: references by slug, secrets as their env reference, no ids, no values.
  const exported = await ok(h.request('GET', '/v1/export'), 200);
  t.equal(exported.apiVersion, 'backhaul/v1');
  t.same(exported.connections.map((c: any) => c.slug), ['crm', 'wh']);
  t.same(exported.connections[0].secrets, { token: { env: 'CRM_TOKEN' } });
  t.equal(exported.models[0].connectionId, 'wh');
  const s0 = exported.syncs[0];
  t.match(s0, { modelId: 'users', destinationId: 'crm', alerts: { channelIds: ['ops'], rowFailurePercent: 5 }, schedule: { type: 'cron', timezone: 'UTC' } });
  t.same(s0.mappings.map((m: any) => m.destinationField), ['firstname', 'lastname']);
  t.same(exported.webhookEndpoints[0].syncIds, ['users-to-crm']);
  t.notMatch(JSON.stringify(exported), /"(conn|mdl|sync|ach|wh|map)_/, 'no ids anywhere');
  t.notOk('secret' in exported.webhookEndpoints[0], 'webhook signing secret not exported');

  // The same workspace: nothing to do.
  const self = await ok(h.request('POST', '/v1/plan', { body: exported }), 200);
  t.same(self.changes, [], JSON.stringify(self.changes));
  t.equal(self.summary.unchanged, 6);

  // A fresh workspace: six creates in dependency order, then the same export.
  const ws = await newWorkspace(h, 'decl-fresh');
  const plan = await ok(h.request('POST', '/v1/plan', { body: exported, token: ws.token }), 200);
  t.same(plan.changes.map((c: any) => `${c.action} ${c.kind} ${c.slug}`), [
    'create connection crm',
    'create connection wh',
    'create alertChannel ops',
    'create model users',
    'create sync users-to-crm',
    'create webhookEndpoint hooks',
  ]);
  t.same(plan.changes[0].fields.find((f: any) => f.field === 'secrets.token'), { field: 'secrets.token', secret: true });
  const applied = await ok(h.request('POST', '/v1/apply', { body: exported, token: ws.token, headers: { 'if-match': `"${plan.planHash}"` } }), 200);
  t.equal(applied.applied.length, 6);
  t.ok(applied.applied.every((a: any) => a.version === 1 && typeof a.resultId === 'string'));
  const again = await ok(h.request('GET', '/v1/export', { token: ws.token }), 200);
  t.same(again, exported, 'the fresh workspace exports the same bundle');

  // Second apply: no change, no version bump, no audit event.
  const before = await footprint(sql, ws.id);
  const second = await ok(h.request('POST', '/v1/apply', { body: exported, token: ws.token }), 200);
  t.same(second.applied, []);
  t.same(await footprint(sql, ws.id), before, 'second apply: same versions, no audit events');

  // One field changed: one update naming that field; applying it bumps that sync only, once.
  const changed = structuredClone(exported);
  changed.syncs[0].delivery.batchSize = 100;
  const one = await ok(h.request('POST', '/v1/plan', { body: changed, token: ws.token }), 200);
  t.equal(one.changes.length, 1, JSON.stringify(one.changes));
  t.match(one.changes[0], { action: 'update', kind: 'sync', slug: 'users-to-crm', expectedVersion: 1, bundlePath: '/syncs/0' });
  t.same(one.changes[0].fields, [{ field: 'delivery.batchSize', before: 500, after: 100 }]);
  const oneApplied = await ok(h.request('POST', '/v1/apply', { body: changed, token: ws.token, headers: { 'if-match': one.planHash } }), 200);
  t.equal(oneApplied.applied.length, 1);
  t.equal(oneApplied.applied[0].version, 2);
  const after = await footprint(sql, ws.id);
  t.equal(after.audits, before.audits + 1, 'one audit event');
  t.equal(after.versions.filter((v, i) => v !== before.versions[i]).length, 1, 'one version moved');
  t.equal((await ok(h.request('GET', '/v1/syncs/users-to-crm', { token: ws.token }), 200)).delivery.batchSize, 100);

  // A stale plan: nothing applied.
  const stale = await h.request('POST', '/v1/apply', { body: exported, token: ws.token, headers: { 'if-match': one.planHash } });
  t.equal(stale.status, 412);
  t.equal(stale.body.code, 'plan_changed');
  t.equal((await ok(h.request('GET', '/v1/syncs/users-to-crm', { token: ws.token }), 200)).delivery.batchSize, 100, 'nothing applied');

  // A mapping changed: reported per destination field.
  const remapped = structuredClone(changed);
  remapped.syncs[0].mappings[1].source = { static: 'Roe' };
  const mp = await ok(h.request('POST', '/v1/plan', { body: remapped, token: ws.token }), 200);
  t.same(mp.changes[0].fields, [{ field: 'mappings.lastname', before: { static: 'Doe' }, after: { static: 'Roe' } }]);

  // A secret changed outside the bundle (through the API): the plan says so, without the value.
  await ok(h.request('PATCH', '/v1/connections/crm', { body: { secrets: { token: LITERAL } }, token: ws.token }), 200);
  const drift = await h.request('POST', '/v1/plan', { body: changed, token: ws.token });
  t.equal(drift.status, 200);
  t.equal(drift.body.changes.length, 1);
  t.match(drift.body.changes[0], { action: 'update', kind: 'connection', slug: 'crm' });
  t.same(drift.body.changes[0].fields, [{ field: 'secrets.token', secret: true }]);
  t.notOk(drift.text.includes(LITERAL), 'the value is never shown');
  await ok(h.request('POST', '/v1/apply', { body: changed, token: ws.token }), 200);
  t.same((await ok(h.request('POST', '/v1/plan', { body: changed, token: ws.token }), 200)).changes, [], 'the reference is back');
  const [stored] = await sql`select secret_names from connections where workspace_id = ${ws.id} and slug = 'crm'`;
  t.same(stored.secret_names, ['token']);

  // GraphQL: the same plan and apply.
  await ok(h.request('PATCH', '/v1/connections/crm', { body: { secrets: { token: LITERAL } }, token: ws.token }), 200);
  const gq = await h.request('POST', '/graphql', {
    token: ws.token,
    body: { query: 'query($b: JSON!) { planBundle(bundle: $b) { planHash changes { action kind slug resourceId expectedVersion fields { field before after secret } } } }', variables: { b: changed } },
  });
  t.same(gq.body.data?.planBundle.changes.map((c: any) => [c.action, c.kind, c.slug, c.fields]), [['update', 'connection', 'crm', [{ field: 'secrets.token', before: null, after: null, secret: true }]]], gq.text);
  t.notOk(gq.text.includes(LITERAL));
  const ga = await h.request('POST', '/graphql', {
    token: ws.token,
    body: { query: 'mutation($b: JSON!, $p: String) { applyBundle(bundle: $b, planHash: $p) { changes { slug version } } }', variables: { b: changed, p: gq.body.data.planBundle.planHash } },
  });
  t.same(ga.body.data?.applyBundle.changes, [{ slug: 'crm', version: gq.body.data.planBundle.changes[0].expectedVersion + 1 }], ga.text);
  const gStale = await h.request('POST', '/graphql', {
    token: ws.token,
    body: { query: 'mutation($b: JSON!, $p: String) { applyBundle(bundle: $b, planHash: $p) { planHash } }', variables: { b: changed, p: gq.body.data.planBundle.planHash } },
  });
  t.equal(gStale.body.errors?.[0]?.extensions?.code, 'plan_changed', gStale.text);

  // A bundle that re-points a connection keeping a secret it does not name: refused (the secret
  // would follow to the new address without anyone sending it), nothing applied.
  await ok(h.request('PATCH', '/v1/connections/crm', { body: { secrets: { headerValue: LITERAL } }, token: ws.token }), 200);
  const repoint = structuredClone(changed);
  repoint.connections[0].config.baseUrl = 'http://127.0.0.1:8/elsewhere';
  const rp = await h.request('POST', '/v1/apply', { body: repoint, token: ws.token });
  t.equal(rp.status, 422, rp.text);
  t.equal(rp.body.code, 'secrets_required');
  t.same(rp.body.errors.map((e: any) => e.path), ['/connections/0/secrets/headerValue']);
  t.equal((await ok(h.request('GET', '/v1/connections/crm', { token: ws.token }), 200)).config.baseUrl, changed.connections[0].config.baseUrl);
  await ok(h.request('PATCH', '/v1/connections/crm', { body: { secrets: { headerValue: null } }, token: ws.token }), 200);

  // Without prune, what the bundle leaves out is untouched; with prune: true it is deleted (dependents first).
  const partial = { ...structuredClone(changed), webhookEndpoints: [] };
  t.same((await ok(h.request('POST', '/v1/plan', { body: partial, token: ws.token }), 200)).changes, [], 'not listed, not managed');
  const pruneAll = { prune: true, connections: changed.connections };
  const pp = await ok(h.request('POST', '/v1/plan', { body: pruneAll, token: ws.token }), 200);
  t.same(pp.changes.map((c: any) => `${c.action} ${c.kind} ${c.slug}`), ['delete webhookEndpoint hooks', 'delete sync users-to-crm', 'delete model users', 'delete alertChannel ops']);
  t.ok(pp.changes.every((c: any) => typeof c.expectedVersion === 'number'));
  await ok(h.request('POST', '/v1/apply', { body: pruneAll, token: ws.token, headers: { 'if-match': pp.planHash } }), 200);
  const pruned = await ok(h.request('GET', '/v1/export', { token: ws.token }), 200);
  t.same([pruned.models, pruned.syncs, pruned.webhookEndpoints, pruned.alertChannels], [[], [], [], []]);
  t.equal(pruned.connections.length, 2);

  // A bad reference: 422 with the path into the bundle, nothing applied (not even the valid parts).
  const bad = structuredClone(exported);
  bad.syncs[0].modelId = 'no-such-model';
  bad.connections.push({ ...bad.connections[1], slug: 'extra' });
  const refused = await h.request('POST', '/v1/apply', { body: bad, token: ws.token });
  t.equal(refused.status, 422);
  t.equal(refused.body.code, 'bundle_reference_unknown');
  t.match(refused.headers.get('content-type'), /application\/problem\+json/);
  t.same(refused.body.errors.map((e: any) => e.path), ['/syncs/0/modelId']);
  const snapshot = await footprint(sql, ws.id);
  t.equal((await h.request('GET', '/v1/connections/extra', { token: ws.token })).status, 404, 'nothing applied');

  // A failure in the middle of an apply (the source refuses the model's SQL): the creates before it are undone.
  const broken = structuredClone(exported);
  broken.connections.push({ ...broken.connections[1], slug: 'extra' });
  broken.models[0].sql = 'select no_such_column from no_such_table';
  const mid = await h.request('POST', '/v1/apply', { body: broken, token: ws.token });
  t.equal(mid.status, 422, mid.text);
  t.equal(mid.body.errors[0].path, '/models/0/sql');
  t.equal(mid.body.bundlePath, '/models/0');
  t.same(await footprint(sql, ws.id), snapshot, 'all or nothing');
  t.equal((await h.request('GET', '/v1/connections/extra', { token: ws.token })).status, 404);

  // Malformed items and duplicate slugs: 400/422 with paths into the bundle.
  const malformed = await h.request('POST', '/v1/plan', { body: { syncs: [{ slug: 'x', name: 'X', mode: 'sideways' }] }, token: ws.token });
  t.equal(malformed.status, 400);
  t.ok(malformed.body.errors.some((e: any) => e.path.startsWith('/syncs/0')), JSON.stringify(malformed.body.errors));
  const dup = await h.request('POST', '/v1/plan', { body: { connections: [exported.connections[1], exported.connections[1]] }, token: ws.token });
  t.equal(dup.status, 422);
  t.equal(dup.body.code, 'bundle_duplicate_slug');
  t.same(dup.body.errors.map((e: any) => e.path), ['/connections/1/slug']);

  // A bundle may be larger than other bodies (a whole workspace): 1.5 MB is planned.
  const big = { models: Array.from({ length: 15 }, (_, i) => ({ slug: `big-${i}`, name: `Big ${i}`, connectionId: 'wh', sql: `select 1 as id -- ${'x'.repeat(99_000)}`, primaryKey: 'id' })) };
  const bigPlan = await h.request('POST', '/v1/plan', { body: big, token: ws.token });
  t.equal(bigPlan.status, 200, bigPlan.text.slice(0, 300));
  t.equal(bigPlan.body.summary.create, 15);

  // Scopes: read may export and plan, apply needs write.
  const reader = await newKey(h, ['read'], ws.token);
  t.equal((await h.request('POST', '/v1/plan', { body: exported, token: reader.token })).status, 200);
  t.equal((await h.request('POST', '/v1/apply', { body: exported, token: reader.token })).status, 403);
});

/** Runs the real CLI against the test server. */
function cli(h: TestBackhaul, token: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, BACKHAUL_URL: h.url, BACKHAUL_API_KEY: token }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

t.test('backhaul export, plan -f and apply -f with a YAML file', async (t) => {
  const h = await startTestBackhaul(t);
  await seed(h);
  const dir = mkdtempSync(join(tmpdir(), 'bh-decl-'));
  const file = join(dir, 'backhaul.yaml');

  const exp = await cli(h, h.token, ['export']);
  t.equal(exp.code, 0, exp.stderr);
  t.match(exp.stdout, /^# Backhaul bundle/);
  const bundle = parse(exp.stdout);
  t.same(bundle, await ok(h.request('GET', '/v1/export'), 200), 'the YAML is the bundle');
  writeFileSync(file, exp.stdout);

  const ws = await newWorkspace(h, 'decl-cli');
  const plan = await cli(h, ws.token, ['plan', '-f', file, '--detailed-exitcode']);
  t.equal(plan.code, 2, plan.stderr);
  t.match(plan.stdout, /\+ connection crm/);
  t.match(plan.stdout, /secrets\.token: set; value not shown/);
  t.match(plan.stdout, /Plan: 6 to create, 0 to update, 0 to delete, 0 unchanged\./);

  const apply = await cli(h, ws.token, ['apply', '-f', file]);
  t.equal(apply.code, 0, apply.stderr);
  t.match(apply.stdout, /Applied: 6 to create/);
  const noop = await cli(h, ws.token, ['apply', '-f', file]);
  t.equal(noop.code, 0, noop.stderr);
  t.match(noop.stdout, /^No changes/);
  const clean = await cli(h, ws.token, ['plan', '-f', file, '--detailed-exitcode']);
  t.equal(clean.code, 0);

  // One field edited in the YAML: one update, field by field.
  const edited = parse(readFileSync(file, 'utf8'));
  edited.models[0].name = 'All users';
  writeFileSync(file, stringify(edited));
  const one = await cli(h, ws.token, ['plan', '-f', file]);
  t.match(one.stdout, /~ model users \(version 1\)\n\s+name: "Users" → "All users"\n/);
  t.match(one.stdout, /Plan: 0 to create, 1 to update, 0 to delete, 5 unchanged\./);
  const done = await cli(h, ws.token, ['apply', '-f', file, '--json']);
  t.equal(done.code, 0, done.stderr);
  t.equal(JSON.parse(done.stdout).applied[0].version, 2);

  // A refusal: exit 1, the code and the path into the bundle on stderr.
  edited.syncs[0].destinationId = 'nowhere';
  writeFileSync(file, stringify(edited));
  const bad = await cli(h, ws.token, ['apply', '-f', file]);
  t.equal(bad.code, 1);
  t.match(bad.stderr, /bundle_reference_unknown/);
  t.match(bad.stderr, /at \/syncs\/0\/destinationId/);
  writeFileSync(file, 'connections: [\n');
  const yamlErr = await cli(h, ws.token, ['plan', '-f', file]);
  t.equal(yamlErr.code, 1);
  t.match(yamlErr.stderr, /is not valid YAML/);
});
