import t from 'tap';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { startFakeCrm } from '../fakes/crm.ts';
import { setupSync, waitForRun } from '../helpers/sync-setup.ts';

// Runs through GraphQL on the real server (the same services as REST): trigger, read the run
// and its records nested under the sync, a row's history, and the automapper.

t.test('trigger a run, read it nested under the sync, a row history, and mapping suggestions', async (t) => {
  const h = await startTestBackhaul(t, { start: { worker: true, engine: { retryBaseMs: 5, heartbeatMs: 200 } } });
  const crm = await startFakeCrm({ reject: (row) => (row.email === 'user3@example.com' ? 'blocked address' : undefined) });
  t.teardown(() => crm.close());
  const { syncId } = await setupSync(t, h, crm.url, { rows: 10 });
  const gql = async (query: string, variables: Record<string, unknown> = {}) => {
    const r = await h.request('POST', '/graphql', { body: { query, variables } });
    if (r.body.errors) throw new Error(JSON.stringify(r.body.errors));
    return r.body.data;
  };

  const trig = await gql('mutation ($s: String!) { triggerRun(syncRef: $s) { run { id status trigger } } }', { s: syncId });
  const runId = trig.triggerRun.run.id;
  t.equal(trig.triggerRun.run.status, 'queued');
  await waitForRun(h, runId);

  const data = await gql(
    `query ($s: String!) { sync(ref: $s) {
       lastRun { id status counts { queried succeeded { insert } rejected { insert } }
                 records(status: rejected) { nodes { primaryKey error { message } } } }
       recordHistory(primaryKey: "3") { nodes { runId status } } } }`,
    { s: syncId },
  );
  t.equal(data.sync.lastRun.id, runId);
  t.equal(data.sync.lastRun.status, 'partially_succeeded');
  t.same(data.sync.lastRun.counts, { queried: 10, succeeded: { insert: 9 }, rejected: { insert: 1 } });
  t.same(data.sync.lastRun.records.nodes, [{ primaryKey: '3', error: { message: 'blocked address' } }]);
  t.same(data.sync.recordHistory.nodes, [{ runId, status: 'rejected' }]);

  // Records are a full Relay connection: edges with cursors, stable ids, an enum operation.
  const page = async (after?: string) =>
    (
      await gql(
        `query ($r: ID!, $a: String) { run(id: $r) { records(first: 4, after: $a) { edges { cursor node { id primaryKey operation } } pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } } }`,
        { r: runId, a: after },
      )
    ).run.records;
  const p1 = await page();
  t.equal(p1.edges.length, 4);
  t.same(p1.pageInfo, { hasNextPage: true, hasPreviousPage: false, startCursor: p1.edges[0].cursor, endCursor: p1.edges[3].cursor });
  t.ok(p1.edges.every((e: any) => e.node.operation === 'insert' && /^rec_/.test(e.node.id)));
  const p2 = await page(p1.pageInfo.endCursor);
  t.equal(p2.pageInfo.hasPreviousPage, true);
  const ids = [...p1.edges, ...p2.edges].map((e: any) => e.node.id);
  t.equal(new Set(ids).size, 8, 'the second page continues after the first');
  t.same((await page()).edges.map((e: any) => e.node.id), p1.edges.map((e: any) => e.node.id), 'ids are stable');

  await gql('mutation ($s: String!) { setMappings(syncRef: $s, mappings: [{ destinationField: "email", source: { column: "email" } }]) { id } }', { s: syncId });
  const sug = await gql('mutation ($s: String!) { suggestMappings(syncRef: $s, apply: true) { suggestions { destinationField sourceColumn confidence } applied { destinationField } } }', { s: syncId });
  t.same(sug.suggestMappings.suggestions.map((x: any) => x.destinationField).sort(), ['age', 'name']);
  t.same(sug.suggestMappings.applied.map((x: any) => x.destinationField).sort(), ['age', 'name']);

  const readOnly = await h.request('POST', '/v1/api-keys', { body: { name: 'ro', scopes: ['read'] } });
  const denied = await h.request('POST', '/graphql', { token: readOnly.body.token, body: { query: `mutation { triggerRun(syncRef: "${syncId}") { run { id } } }` } });
  t.equal(denied.body.errors[0].extensions.code, 'forbidden', 'the same scope rules as REST');
});
