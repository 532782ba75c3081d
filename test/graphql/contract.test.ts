import t from 'tap';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { graph, ok } from '../helpers/http-fixtures.ts';

// The GraphQL side of issue 16: setMappings guarded by the sync's version (items 3), slugs in list
// filters and createOnly (item 10), Relay page info, stable ids, non-null relations, typed schedule
// input and errors worded in GraphQL terms (item 8).

t.test('GraphQL contract', async (t) => {
  const h = await startTestBackhaul(t);
  const g = await graph(h, 'gc');
  const gql = async (query: string, variables: Record<string, unknown> = {}) => (await h.request('POST', '/graphql', { body: { query, variables } })).body;
  const data = async (query: string, variables: Record<string, unknown> = {}) => {
    const r = await gql(query, variables);
    if (r.errors) throw new Error(JSON.stringify(r.errors));
    return r.data;
  };
  const syncVersion = async () => (await data('query($r: String!) { sync(ref: $r) { version } }', { r: g.sync.id })).sync.version as number;

  t.test('setMappings(expectedSyncVersion): two writers with the same version, one wins', async (t) => {
    const v = await syncVersion();
    const set = 'mutation($r: String!, $v: Int, $f: String!) { setMappings(syncRef: $r, expectedSyncVersion: $v, mappings: [{ destinationField: $f, source: { column: "email" } }]) { destinationField sync { version } } }';
    const [a, b] = await Promise.all([gql(set, { r: g.sync.id, v, f: 'email' }), gql(set, { r: g.sync.id, v, f: 'firstname' })]);
    const results = [a, b].map((x) => (x.errors ? x.errors[0].extensions.code : 'ok')).sort();
    t.same(results, ['ok', 'version_mismatch'], 'one 200, one version_mismatch');
    const loser = [a, b].find((x) => x.errors)!;
    t.match(loser.errors[0].message, /expectedVersion/, 'worded in GraphQL terms');
    t.notMatch(loser.errors[0].message, /If-Match/);
    t.equal(await syncVersion(), v + 1, 'the winner bumped the version');
    const winner = [a, b].find((x) => !x.errors)!;
    t.equal(winner.data.setMappings[0].sync.version, v + 1);
  });

  t.test('list filters take slugs; syncs carry non-null model and destination', async (t) => {
    for (const [arg, value] of [
      ['modelId', g.model.slug],
      ['modelId', g.model.id],
      ['destinationId', g.dst.slug],
    ]) {
      const r = await data(`query($v: ID) { syncs(${arg}: $v) { nodes { id model { slug } destination { slug } } } }`, { v: value });
      t.same(r.syncs.nodes, [{ id: g.sync.id, model: { slug: g.model.slug }, destination: { slug: g.dst.slug } }], `syncs(${arg}: ${value})`);
    }
    t.same((await data('{ syncs(modelId: "nope") { nodes { id } } }')).syncs.nodes, []);
    t.same((await data(`{ models(connectionId: "${g.src.slug}") { nodes { id connection { slug } } } }`)).models.nodes, [{ id: g.model.id, connection: { slug: g.src.slug } }]);
  });

  t.test('Relay page info and cursors', async (t) => {
    for (const s of ['gc-a', 'gc-b', 'gc-c']) await ok(h.request('POST', '/v1/connections', { body: { slug: s, name: s, type: 'postgres', config: { host: 'h', database: 'd', user: 'u' } } }));
    const p1 = (await data('{ connections(first: 2) { edges { cursor node { id } } pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } }')).connections;
    t.equal(p1.edges.length, 2);
    t.same(p1.pageInfo, { hasNextPage: true, hasPreviousPage: false, startCursor: p1.edges[0].cursor, endCursor: p1.edges[1].cursor });
    const p2 = (await data('query($a: String) { connections(first: 2, after: $a) { edges { cursor node { id } } pageInfo { hasPreviousPage startCursor } } }', { a: p1.pageInfo.endCursor })).connections;
    t.equal(p2.pageInfo.hasPreviousPage, true);
    t.equal(p2.pageInfo.startCursor, p2.edges[0].cursor);
    t.notSame(p2.edges[0].node.id, p1.edges[1].node.id);
    const catalog = (await data('{ connectorConnection(first: 1) { edges { cursor node { id type } } pageInfo { hasNextPage endCursor } } connectors { id type } }'));
    t.match(catalog.connectorConnection.edges[0].node.id, /^ctr_/);
    t.equal(catalog.connectorConnection.pageInfo.hasNextPage, true);
    t.ok(catalog.connectors.every((c: { id: string; type: string }) => c.id === `ctr_${c.type}`), 'connectors have stable ids');
    const rest = (await data('query($a: String) { connectorConnection(after: $a) { nodes { type } } }', { a: catalog.connectorConnection.pageInfo.endCursor })).connectorConnection.nodes;
    t.equal(rest.length, catalog.connectors.length - 1);
    const maps = (await data('query($r: String!) { sync(ref: $r) { mappingConnection { edges { cursor node { id } } } mappings { id } } }', { r: g.sync.id })).sync;
    t.same(maps.mappingConnection.edges.map((e: { node: { id: string } }) => e.node.id), maps.mappings.map((m: { id: string }) => m.id));
  });

  t.test('errors in GraphQL terms', async (t) => {
    const bad = await gql('{ connections(first: 0) { nodes { id } } }');
    t.equal(bad.errors[0].extensions.code, 'validation_failed');
    t.match(bad.errors[0].message, /^first /);
    t.same(bad.errors[0].extensions.errors.map((e: { path: string }) => e.path), ['/first']);
    const cur = await gql('{ connections(after: "garbage") { nodes { id } } }');
    t.equal(cur.errors[0].extensions.code, 'invalid_cursor');
    t.same(cur.errors[0].extensions.errors.map((e: { path: string }) => e.path), ['/after']);
    const stale = await gql(`mutation { updateSync(ref: "${g.sync.id}", input: { name: "x" }, expectedVersion: 999) { id } }`);
    t.equal(stale.errors[0].extensions.code, 'version_mismatch');
    t.match(stale.errors[0].message, /^expectedVersion is not the current version \(\d+\)\.$/);
  });

  t.test('schedule input is @oneOf; createOnly is If-None-Match', async (t) => {
    const s = await data(`mutation { updateSync(ref: "${g.sync.id}", input: { schedule: { cron: { expression: "0 6 * * *" } } }) { schedule { ... on CronSchedule { expression timezone } } } }`);
    t.same(s.updateSync.schedule, { expression: '0 6 * * *', timezone: 'UTC' });
    const i = await data(`mutation { updateSync(ref: "${g.sync.id}", input: { schedule: { interval: { everySeconds: 60 } } }) { schedule { __typename ... on IntervalSchedule { everySeconds } } } }`);
    t.same(i.updateSync.schedule, { __typename: 'IntervalSchedule', everySeconds: 60 });
    const two = await gql(`mutation { updateSync(ref: "${g.sync.id}", input: { schedule: { manual: true, interval: { everySeconds: 60 } } }) { id } }`);
    t.ok(two.errors, 'two kinds at once is refused by the schema');
    const m = await data(`mutation { updateSync(ref: "${g.sync.id}", input: { schedule: { manual: true } }) { schedule { __typename } } }`);
    t.same(m.updateSync.schedule, { __typename: 'ManualSchedule' });

    const input = `{ name: "Once", type: "postgres", config: { host: "h", database: "d", user: "u" } }`;
    const made = await data(`mutation { replaceConnection(ref: "gc-once", input: ${input}, createOnly: true) { created connection { version } } }`);
    t.same(made.replaceConnection, { created: true, connection: { version: 1 } });
    const again = await gql(`mutation { replaceConnection(ref: "gc-once", input: ${input}, createOnly: true) { created } }`);
    t.equal(again.errors[0].extensions.code, 'already_exists');
    t.match(again.errors[0].message, /createOnly/);
  });

  t.test('a sync and its mappings in one mutation', async (t) => {
    const r = await data(
      `mutation($m: String!, $d: String!) { replaceSync(ref: "gc-atomic", input: { name: "Atomic", modelId: $m, destinationId: $d, object: "contacts", mode: upsert,
         matchKey: { sourceColumn: "email", destinationField: "email" }, mappings: [{ destinationField: "email", source: { column: "email" } }] }) { created sync { version mappings { destinationField } } } }`,
      { m: g.model.slug, d: g.dst.slug },
    );
    t.same(r.replaceSync, { created: true, sync: { version: 1, mappings: [{ destinationField: 'email' }] } });
  });
});
