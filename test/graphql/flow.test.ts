import t from 'tap';
import { httpConnectionInput, MODEL_SQL, pgConnectionInput, startGraphql } from '../helpers/graphql.ts';

// The whole configuration flow through GraphQL alone, against a real server and database:
// connections, model (SQL checked on the real source), sync, mappings, nested reads, versions,
// errors with REST's codes, runs, workspace isolation, deletes.

const SYNC_FIELDS = `
  id slug name version mode object enabled
  matchKey { sourceColumn destinationField }
  schedule { __typename ... on IntervalSchedule { type everySeconds } ... on CronSchedule { expression timezone } ... on ManualSchedule { type } }
  delivery { batchSize concurrency maxRequestsPerSecond maxRetries }
  alerts { channelIds onFailure rowFailurePercent }
  model { id slug primaryKey connection { id slug type roles secretNames } }
  destination { id slug roles }
  mappings { id destinationField version source { __typename ... on ColumnSource { column } ... on TemplateSource { template } ... on StaticSource { static } } }
  lastRun { id status }
`;

t.test('configuration flow through GraphQL alone', async (t) => {
  const g = await startGraphql(t);

  // -- create --------------------------------------------------------------------------------
  const src = (
    await g.data(`mutation($input: CreateConnectionInput!) { createConnection(input: $input) { id slug type roles secretNames version config } }`, {
      input: pgConnectionInput('warehouse'),
    })
  ).createConnection;
  t.match(src.id, /^conn_/);
  t.same(src.roles, ['source', 'destination']);
  t.same(src.secretNames, ['password'], 'secret names only');
  t.equal(src.version, 1);

  // Secrets are not a readable field at all.
  const secretsField = await g.gql(`{ connection(ref: "warehouse") { secrets } }`);
  t.equal(secretsField.status, 400);
  t.equal(secretsField.body.errors[0].extensions.code, 'graphql_validation_failed');

  const dst = (await g.data(`mutation($input: CreateConnectionInput!) { createConnection(input: $input) { id slug } }`, { input: httpConnectionInput('crm') })).createConnection;

  // Literal input (not variables) goes through the JSON scalar's literal parsing.
  const model = (
    await g.data(`mutation {
      createModel(input: { slug: "users", name: "Users", connectionId: "warehouse", sql: ${JSON.stringify(MODEL_SQL)}, primaryKey: "id" }) {
        id slug connectionId primaryKey version connection { id }
      }
    }`)
  ).createModel;
  t.equal(model.connectionId, src.id, 'slug reference resolved to the id');
  t.equal(model.connection.id, src.id);

  const sync = (
    await g.data(`mutation($input: CreateSyncInput!) { createSync(input: $input) { ${SYNC_FIELDS} } }`, {
      input: {
        slug: 'users-to-crm',
        name: 'Users to CRM',
        modelId: model.id,
        destinationId: 'crm',
        object: 'contacts',
        mode: 'upsert',
        matchKey: { sourceColumn: 'email', destinationField: 'email' },
        schedule: { interval: { everySeconds: 900 } },
        delivery: { batchSize: 100 },
      },
    })
  ).createSync;
  t.match(sync.id, /^sync_/);
  t.same(sync.schedule, { __typename: 'IntervalSchedule', type: 'interval', everySeconds: 900 });
  t.same(sync.delivery, { batchSize: 100, concurrency: 4, maxRequestsPerSecond: null, maxRetries: 6 }, 'defaults filled by the service');
  t.equal(sync.lastRun, null);

  const mappings = (
    await g.data(
      `mutation($sync: String!, $m: [MappingInput!]!) { setMappings(syncRef: $sync, mappings: $m) { id destinationField source { __typename } } }`,
      {
        sync: 'users-to-crm',
        m: [
          { destinationField: 'email', source: { column: 'email' } },
          { destinationField: 'firstname', source: { template: '{{first_name}}!' } },
          { destinationField: 'lastname', source: { static: 'Unknown' } },
        ],
      },
    )
  ).setMappings;
  t.equal(mappings.length, 3);
  t.match(mappings[0].id, /^map_/);

  // -- read back, nested ---------------------------------------------------------------------
  const read = (await g.data(`query($ref: String!) { sync(ref: $ref) { ${SYNC_FIELDS} } }`, { ref: 'users-to-crm' })).sync;
  t.equal(read.id, sync.id);
  t.equal(read.model.slug, 'users');
  t.same(read.model.connection, { id: src.id, slug: 'warehouse', type: 'postgres', roles: ['source', 'destination'], secretNames: ['password'] });
  t.same(read.destination, { id: dst.id, slug: 'crm', roles: ['destination'] });
  t.same(
    read.mappings.map((m: any) => [m.destinationField, m.source]),
    [
      ['email', { __typename: 'ColumnSource', column: 'email' }],
      ['firstname', { __typename: 'TemplateSource', template: '{{first_name}}!' }],
      ['lastname', { __typename: 'StaticSource', static: 'Unknown' }],
    ],
  );

  // The same sync through REST: one implementation, one answer.
  const rest = await g.h.request('GET', `/v1/syncs/${sync.id}`);
  t.equal(rest.body.version, read.version);
  t.same(rest.body.delivery, read.delivery);

  // -- lists, filters, pagination --------------------------------------------------------------
  const page1 = (await g.data(`{ connections(first: 1) { edges { cursor node { slug } } nodes { id } pageInfo { hasNextPage endCursor } } }`)).connections;
  t.equal(page1.edges.length, 1);
  t.equal(page1.pageInfo.hasNextPage, true);
  t.equal(page1.pageInfo.endCursor, page1.edges[0].cursor);
  const restPage = await g.h.request('GET', '/v1/connections?limit=1');
  t.equal(page1.pageInfo.endCursor, restPage.body.nextCursor, 'the same opaque cursor as REST');
  const page2 = (await g.data(`query($after: String) { connections(first: 1, after: $after) { nodes { slug } pageInfo { hasNextPage } } }`, { after: page1.pageInfo.endCursor }))
    .connections;
  t.same(page2.nodes, [{ slug: 'crm' }]);
  t.equal(page2.pageInfo.hasNextPage, false);
  t.same((await g.data(`{ connections(type: "http") { nodes { slug } } }`)).connections.nodes, [{ slug: 'crm' }], 'filter by type');
  t.same((await g.data(`query($m: ID) { syncs(modelId: $m, enabled: true) { nodes { slug } } }`, { m: model.id })).syncs.nodes, [{ slug: 'users-to-crm' }]);
  t.same((await g.data(`query($d: ID) { syncs(destinationId: $d, enabled: false) { nodes { slug } } }`, { d: dst.id })).syncs.nodes, []);
  t.same((await g.data(`{ model(ref: "users") { syncs { nodes { id } } } }`)).model.syncs.nodes, [{ id: sync.id }]);
  const badCursor = await g.gql(`{ syncs(after: "nope") { nodes { id } } }`);
  t.equal(badCursor.body.errors[0].extensions.code, 'invalid_cursor');

  // -- model columns and preview reach the real source ---------------------------------------
  const cols = (await g.data(`{ model(ref: "users") { columns { name type } preview(limit: 2) { columns { name } rows } } }`)).model;
  t.same(
    cols.columns.map((c: any) => c.name),
    ['id', 'email', 'first_name'],
  );
  t.equal(cols.preview.rows.length, 2);
  t.ok(cols.preview.rows[0].email.endsWith('@example.com'));

  // -- versions: expectedVersion is If-Match ---------------------------------------------------
  const stale = await g.gql(`mutation { updateSync(ref: "users-to-crm", input: { name: "Renamed" }, expectedVersion: 99) { version } }`);
  t.equal(stale.status, 200, 'an execution error: HTTP 200 with the error in the body');
  t.equal(stale.body.data, null);
  t.equal(stale.body.errors[0].extensions.code, 'version_mismatch');
  t.equal(stale.body.errors[0].extensions.status, 412);
  t.equal(stale.body.errors[0].extensions.currentVersion, read.version);
  t.same(stale.body.errors[0].path, ['updateSync']);
  const renamed = (
    await g.data(`mutation($v: Int) { updateSync(ref: "users-to-crm", input: { name: "Renamed", enabled: false, schedule: { manual: true } }, expectedVersion: $v) { name version enabled schedule { __typename } } }`, {
      v: read.version,
    })
  ).updateSync;
  t.same(renamed, { name: 'Renamed', version: read.version + 1, enabled: false, schedule: { __typename: 'ManualSchedule' } });
  t.equal((await g.data(`mutation { updateSync(ref: "users-to-crm", input: { enabled: true }) { enabled } }`)).updateSync.enabled, true);

  // Connection secrets: set / remove by merge, never readable.
  const conn2 = (await g.data(`mutation { updateConnection(ref: "warehouse", input: { secrets: { password: null }, config: { port: ${src.config.port} } }, expectedVersion: 1) { secretNames version } }`))
    .updateConnection;
  t.same(conn2, { secretNames: [], version: 2 });

  // Mapping writes: single create / update / replace / delete, and the set's version guard.
  const m4 = (await g.data(`mutation { createMapping(syncRef: "users-to-crm", input: { destinationField: "owner", source: { lookup: { object: "owners", matchField: "email", sourceColumn: "email", resultField: "id" } } }) { id version source { ... on LookupSource { lookup { object resultField } } } } }`))
    .createMapping;
  t.same(m4.source, { lookup: { object: 'owners', resultField: 'id' } });
  const m4b = (await g.data(`mutation($id: ID!) { updateMapping(syncRef: "users-to-crm", id: $id, input: { source: { column: "owner_id" } }, expectedVersion: 1) { version source { ... on ColumnSource { column } } } }`, { id: m4.id }))
    .updateMapping;
  t.same(m4b, { version: 2, source: { column: 'owner_id' } });
  const m4c = (await g.data(`mutation($id: ID!) { replaceMapping(syncRef: "users-to-crm", id: $id, input: { destinationField: "owner_id", source: { column: "owner_id" } }) { destinationField version } }`, { id: m4.id }))
    .replaceMapping;
  t.same(m4c, { destinationField: 'owner_id', version: 3 });
  const twoSources = await g.gql(`mutation { createMapping(syncRef: "users-to-crm", input: { destinationField: "x", source: { column: "a", template: "b" } }) { id } }`);
  t.equal(twoSources.status, 400, '@oneOf: exactly one source kind');
  t.equal(twoSources.body.errors[0].extensions.code, 'graphql_validation_failed');
  const badTemplate = await g.gql(`mutation { createMapping(syncRef: "users-to-crm", input: { destinationField: "x", source: { template: "{{#each}}" } }) { id } }`);
  t.equal(badTemplate.body.errors[0].extensions.code, 'invalid_template', 'the service rule, via the same hook as REST');
  const dupField = await g.gql(`mutation { createMapping(syncRef: "users-to-crm", input: { destinationField: "email", source: { column: "email" } }) { id } }`);
  t.equal(dupField.body.errors[0].extensions.code, 'mapping_field_taken');
  t.equal(dupField.body.errors[0].extensions.status, 409);
  const staleSet = await g.gql(`mutation { setMappings(syncRef: "users-to-crm", mappings: [], expectedSyncVersion: 1) { id } }`);
  t.equal(staleSet.body.errors[0].extensions.code, 'version_mismatch');
  t.same((await g.data(`mutation($id: ID!) { deleteMapping(syncRef: "users-to-crm", id: $id, expectedVersion: 3) { deletedId } }`, { id: m4.id })).deleteMapping, { deletedId: m4.id });

  // -- validation errors carry REST's code, status and field paths -----------------------------
  const badSlug = await g.gql(`mutation($input: CreateConnectionInput!) { createConnection(input: $input) { id } }`, { input: { ...pgConnectionInput('x'), slug: 'Not_A_Slug' } });
  t.equal(badSlug.status, 200);
  t.equal(badSlug.body.errors[0].extensions.code, 'validation_failed');
  t.equal(badSlug.body.errors[0].extensions.status, 400);
  t.match(badSlug.body.errors[0].extensions.errors, [{ path: '/slug' }]);
  const dupSlug = await g.gql(`mutation($input: CreateConnectionInput!) { createConnection(input: $input) { id } }`, { input: pgConnectionInput('warehouse') });
  t.equal(dupSlug.body.errors[0].extensions.code, 'slug_taken');
  const unknownType = await g.gql(`mutation { createConnection(input: { slug: "zz", name: "z", type: "nope", config: {} }) { id } }`);
  t.equal(unknownType.body.errors[0].extensions.code, 'unknown_connector_type');
  const noPk = await g.gql(`mutation { createModel(input: { slug: "m2", name: "M", connectionId: "warehouse", sql: "select 1 as a", primaryKey: "id" }) { id } }`);
  t.equal(noPk.body.errors[0].extensions.code, 'primary_key_not_found', 'SQL checked against the real source');
  const skipCheck = await g.gql(`mutation { createModel(input: { slug: "m2", name: "M", connectionId: "warehouse", sql: "select 1 as a", primaryKey: "id" }, validate: false) { id } }`);
  t.match(skipCheck.body.data.createModel.id, /^mdl_/, 'validate: false skips the source check, as ?validate=false');
  const notSource = await g.gql(`mutation { createModel(input: { slug: "m3", name: "M", connectionId: "crm", sql: "select 1", primaryKey: "id" }) { id } }`);
  t.equal(notSource.body.errors[0].extensions.code, 'invalid_reference');
  t.match(notSource.body.errors[0].extensions.errors, [{ path: '/connectionId' }]);
  const badCron = await g.gql(`mutation { updateSync(ref: "users-to-crm", input: { schedule: { cron: { expression: "nope" } } }) { id } }`);
  t.equal(badCron.body.errors[0].extensions.code, 'invalid_schedule');
  const inUse = await g.gql(`mutation { deleteConnection(ref: "warehouse") { deletedId } }`);
  t.equal(inUse.body.errors[0].extensions.code, 'resource_in_use');
  t.equal(inUse.body.errors[0].extensions.status, 409);
  t.match(inUse.body.errors[0].extensions.dependents, [{ type: 'model' }]);
  const missing = await g.gql(`mutation { updateModel(ref: "nope", input: { name: "x" }) { id } }`);
  t.equal(missing.body.errors[0].extensions.code, 'not_found');
  t.equal(missing.body.errors[0].extensions.status, 404);
  t.equal((await g.data(`{ model(ref: "nope") { id } }`)).model, null, 'single lookups answer null for not found');

  // -- PUT semantics: replace, or create by slug ----------------------------------------------
  const put = (await g.data(`mutation($input: ReplaceConnectionInput!) { replaceConnection(ref: "crm-2", input: $input) { created connection { id slug } } }`, {
    input: { name: 'CRM 2', type: 'http', config: httpConnectionInput('x').config },
  })).replaceConnection;
  t.equal(put.created, true);
  t.equal(put.connection.slug, 'crm-2');
  const put2 = (await g.data(`mutation($input: ReplaceConnectionInput!) { replaceConnection(ref: "crm-2", input: $input, expectedVersion: 1) { created connection { name version } } }`, {
    input: { name: 'CRM two', type: 'http', config: httpConnectionInput('x').config },
  })).replaceConnection;
  t.same(put2, { created: false, connection: { name: 'CRM two', version: 2 } });
  const rm = (await g.data(`mutation { replaceModel(ref: "users", input: { name: "Users!", connectionId: "warehouse", sql: ${JSON.stringify(MODEL_SQL)}, primaryKey: "id" }) { created model { name } } }`)).replaceModel;
  t.same(rm, { created: false, model: { name: 'Users!' } });
  const rs = (await g.data(`mutation($input: ReplaceSyncInput!) { replaceSync(ref: "users-to-crm", input: $input) { created sync { name delivery { batchSize } } } }`, {
    input: { name: 'Users', modelId: 'users', destinationId: 'crm', object: 'contacts', mode: 'upsert', matchKey: { sourceColumn: 'email', destinationField: 'email' } },
  })).replaceSync;
  t.same(rs, { created: false, sync: { name: 'Users', delivery: { batchSize: 500 } } }, 'PUT resets optional groups to defaults');

  // -- runs -----------------------------------------------------------------------------------
  const trig = (await g.data(`mutation { triggerRun(syncRef: "users-to-crm", fullResync: true) { created run { id status trigger fullResync syncId counts { planned { insert } } sync { slug } } } }`))
    .triggerRun;
  t.equal(trig.created, true);
  t.match(trig.run, { status: 'queued', trigger: 'api', fullResync: true, syncId: sync.id, counts: { planned: { insert: 0 } }, sync: { slug: 'users-to-crm' } });
  const again = (await g.data(`mutation { triggerRun(syncRef: "users-to-crm") { created run { id } } }`)).triggerRun;
  t.same(again, { created: false, run: { id: trig.run.id } }, 'a queued run is returned, not duplicated');
  const withRuns = (await g.data(`{ sync(ref: "users-to-crm") { lastRun { id status } runs(first: 5) { nodes { id } pageInfo { hasNextPage } } } }`)).sync;
  t.same(withRuns.lastRun, { id: trig.run.id, status: 'queued' });
  t.same(withRuns.runs.nodes, [{ id: trig.run.id }]);
  const cancelled = (await g.data(`mutation($id: ID!) { cancelRun(id: $id) { id status finishedAt } }`, { id: trig.run.id })).cancelRun;
  t.equal(cancelled.status, 'cancelled');
  const recancel = await g.gql(`mutation($id: ID!) { cancelRun(id: $id) { id } }`, { id: trig.run.id });
  t.equal(recancel.body.errors[0].extensions.code, 'run_finished');
  t.same((await g.data(`query($id: ID!) { run(id: $id) { status records { nodes { primaryKey } pageInfo { hasNextPage } } } }`, { id: trig.run.id })).run, {
    status: 'cancelled',
    records: { nodes: [], pageInfo: { hasNextPage: false } },
  });
  const off = await g.gql(`mutation { updateSync(ref: "users-to-crm", input: { enabled: false }) { enabled } }`);
  t.equal(off.body.data.updateSync.enabled, false);
  const disabled = await g.gql(`mutation { triggerRun(syncRef: "users-to-crm") { created } }`);
  t.equal(disabled.body.errors[0].extensions.code, 'sync_disabled');

  // -- node lookup by global id ---------------------------------------------------------------
  const audit = (await g.data(`{ auditEvents(first: 3, resourceType: "sync") { nodes { id action resourceType resourceId changedFields } } }`)).auditEvents.nodes;
  t.ok(audit.length > 0);
  t.equal(audit[0].resourceType, 'sync');
  const viewer = (await g.data(`{ viewer { keyId workspace { id } } }`)).viewer;
  const ids = [src.id, model.id, sync.id, mappings[0].id, trig.run.id, viewer.keyId, audit[0].id, viewer.workspace.id, 'bogus_1', 'nope'];
  const nodes = (
    await g.data(`query($ids: [ID!]!) { nodes(ids: $ids) { __typename id } }`, { ids })
  ).nodes;
  t.same(
    nodes.map((n: any) => n?.__typename ?? null),
    ['Connection', 'Model', 'Sync', 'Mapping', 'Run', 'ApiKey', 'AuditEvent', 'Workspace', null, null],
  );
  t.same((await g.data(`query($id: ID!) { node(id: $id) { id ... on Sync { slug model { slug } } } }`, { id: sync.id })).node, { id: sync.id, slug: 'users-to-crm', model: { slug: 'users' } });

  // -- deletes ---------------------------------------------------------------------------------
  t.same((await g.data(`mutation { deleteSync(ref: "users-to-crm") { deletedId } }`)).deleteSync, { deletedId: sync.id });
  const staleDelete = await g.gql(`mutation { deleteModel(ref: "users", expectedVersion: 1) { deletedId } }`);
  t.equal(staleDelete.body.errors[0].extensions.code, 'version_mismatch');
  t.same((await g.data(`mutation { deleteModel(ref: "users", expectedVersion: 2) { deletedId } }`)).deleteModel, { deletedId: model.id });
  await g.data(`mutation { deleteModel(ref: "m2") { deletedId } }`);
  t.same((await g.data(`mutation { deleteConnection(ref: "warehouse") { deletedId } }`)).deleteConnection, { deletedId: src.id });
  t.same((await g.data(`query($id: ID!) { node(id: $id) { id } }`, { id: sync.id })).node, null);
  t.same((await g.data(`{ syncs { nodes { id } } }`)).syncs.nodes, []);
});

t.test('workspaces, API keys, scopes and isolation', async (t) => {
  const g = await startGraphql(t);
  const conn = (await g.data(`mutation($input: CreateConnectionInput!) { createConnection(input: $input) { id } }`, { input: httpConnectionInput('crm') })).createConnection;

  const ws = (await g.data(`mutation { createWorkspace(input: { slug: "acme", name: "Acme" }) { workspace { id slug } apiKey { id scopes owner } token } }`)).createWorkspace;
  t.equal(ws.workspace.slug, 'acme');
  t.same(ws.apiKey.scopes, ['admin']);
  t.equal(ws.apiKey.owner, false);
  t.match(ws.token, /^bh_/);
  t.same((await g.data(`{ workspaces { nodes { slug } } }`)).workspaces.nodes.map((w: any) => w.slug).sort(), ['acme', 'default']);

  // Another workspace's ids and slugs are invisible: null, never the data, never "forbidden".
  const other = ws.token;
  t.same((await g.data(`query($id: ID!) { node(id: $id) { id } }`, { id: conn.id }, other)).node, null, 'cross-workspace node → null');
  t.same((await g.data(`query($ids: [ID!]!) { nodes(ids: $ids) { id } }`, { ids: [conn.id, g.h.bh.services ? ws.workspace.id : ''] }, other)).nodes, [null, { id: ws.workspace.id }]);
  t.same((await g.data(`{ connection(ref: "crm") { id } }`, undefined, other)).connection, null);
  t.same((await g.data(`{ connections { nodes { id } } }`, undefined, other)).connections.nodes, []);
  const viewerWs = (await g.data(`{ viewer { workspace { id } } }`)).viewer.workspace.id;
  t.same((await g.data(`query($id: ID!) { node(id: $id) { id } }`, { id: viewerWs }, other)).node, null, "another workspace's own node");
  const cross = await g.gql(`mutation($id: String!) { updateConnection(ref: $id, input: { name: "stolen" }) { id } }`, { id: conn.id }, { token: other });
  t.equal(cross.body.errors[0].extensions.code, 'not_found');
  const crossMapping = await g.gql(`mutation { createMapping(syncRef: "whatever", input: { destinationField: "a", source: { column: "a" } }) { id } }`, undefined, { token: other });
  t.equal(crossMapping.body.errors[0].extensions.code, 'not_found');
  const notOwner = await g.gql(`{ workspaces { nodes { id } } }`, undefined, { token: other });
  t.equal(notOwner.body.errors[0].extensions.code, 'forbidden');
  t.equal(notOwner.body.errors[0].extensions.status, 403);

  // Scopes are the services': a read key cannot write.
  const readKey = (await g.data(`mutation { createApiKey(input: { name: "reader", scopes: [read] }) { apiKey { id scopes prefix } token } }`)).createApiKey;
  t.same(readKey.apiKey.scopes, ['read']);
  t.equal(readKey.token.slice(0, 10), readKey.apiKey.prefix);
  t.same((await g.data(`{ connections { nodes { id } } }`, undefined, readKey.token)).connections.nodes, [{ id: conn.id }]);
  const denied = await g.gql(`mutation($input: CreateConnectionInput!) { createConnection(input: $input) { id } }`, { input: httpConnectionInput('x') }, { token: readKey.token });
  t.equal(denied.status, 200);
  t.equal(denied.body.errors[0].extensions.code, 'forbidden');
  const keysDenied = await g.gql(`{ apiKeys { nodes { id } } }`, undefined, { token: readKey.token });
  t.equal(keysDenied.body.errors[0].extensions.code, 'forbidden');
  const keyNode = await g.gql(`query($id: ID!) { node(id: $id) { id } }`, { id: readKey.apiKey.id }, { token: readKey.token });
  t.equal(keyNode.body.errors[0].extensions.code, 'forbidden', 'api keys need admin, also by node');

  const keys = (await g.data(`{ apiKeys { nodes { id name } } }`)).apiKeys.nodes;
  t.ok(keys.some((k: any) => k.id === readKey.apiKey.id));
  t.same((await g.data(`mutation($id: ID!) { revokeApiKey(id: $id) { deletedId } }`, { id: readKey.apiKey.id })).revokeApiKey, { deletedId: readKey.apiKey.id });
  const revoked = await g.gql(`{ viewer { keyId } }`, undefined, { token: readKey.token });
  t.equal(revoked.status, 401);
  t.equal(revoked.body.errors[0].extensions.code, 'unauthorized');
});

t.test('authentication, GraphiQL and idempotency', async (t) => {
  const g = await startGraphql(t);
  for (const token of [null, 'bh_not-a-real-key']) {
    const r = await g.gql(`{ viewer { keyId } }`, undefined, { token });
    t.equal(r.status, 401, `token ${token}`);
    t.equal(r.body.errors[0].extensions.code, 'unauthorized');
    t.equal(r.body.data, null);
  }
  // Introspection needs a key too.
  const anonIntro = await g.gql(`{ __schema { types { name } } }`, undefined, { token: null });
  t.equal(anonIntro.status, 401);
  const intro = await g.data(`{ __schema { queryType { name } } __type(name: "RunStatus") { enumValues { name } } }`);
  t.same(
    intro.__type.enumValues.map((v: any) => v.name),
    ['queued', 'running', 'succeeded', 'partially_succeeded', 'failed', 'cancelled'],
  );
  // GET: queries only, with the same key.
  const get = await fetch(`${g.url}/graphql?query=${encodeURIComponent('{ viewer { owner } }')}`, { headers: { authorization: `Bearer ${g.h.token}` } });
  t.same(await get.json(), { data: { viewer: { owner: true } } });
  const getMutation = await fetch(`${g.url}/graphql?query=${encodeURIComponent('mutation { revokeApiKey(id: "key_x") { deletedId } }')}`, { headers: { authorization: `Bearer ${g.h.token}` } });
  t.equal(getMutation.status, 405);
  t.equal(((await getMutation.json()) as any).errors[0].extensions.code, 'method_not_allowed');
  const anonGet = await fetch(`${g.url}/graphql?query=${encodeURIComponent('{ viewer { owner } }')}`);
  t.equal(anonGet.status, 401);

  const badJson = await fetch(`${g.url}/graphql`, { method: 'POST', headers: { authorization: `Bearer ${g.h.token}`, 'content-type': 'application/json' }, body: '{"query": ' });
  t.equal(badJson.status, 400);
  t.equal(((await badJson.json()) as any).errors[0].extensions.code, 'malformed_json');

  const ide = await fetch(`${g.url}/graphiql`);
  t.equal(ide.status, 200, 'GraphiQL outside production, without a key (it is a static page)');

  // Idempotency-Key on POST /graphql: the REST mechanism, for the whole request.
  const q = `mutation($input: CreateConnectionInput!) { createConnection(input: $input) { id } }`;
  const vars = { input: httpConnectionInput('once') };
  const first = await g.gql(q, vars, { headers: { 'idempotency-key': 'k-1' } });
  const second = await g.gql(q, vars, { headers: { 'idempotency-key': 'k-1' } });
  t.equal(second.headers.get('idempotent-replayed'), 'true');
  t.same(second.body, first.body);
  t.equal((await g.data(`{ connections { nodes { id } } }`)).connections.nodes.length, 1, 'created once');
  const other = await g.gql(q, { input: httpConnectionInput('twice') }, { headers: { 'idempotency-key': 'k-1' } });
  t.equal(other.status, 422);
  t.equal(other.body.errors[0].extensions.code, 'idempotency_key_reused');
});

t.test('production: no GraphiQL', async (t) => {
  const g = await startGraphql(t, { production: true });
  const ide = await fetch(`${g.url}/graphiql`);
  t.equal(ide.status, 404);
  t.same((await g.data(`{ viewer { owner } }`)).viewer, { owner: true });
});
