import t from 'tap';
import { httpConnectionInput, MODEL_SQL, pgConnectionInput, startGraphql } from '../helpers/graphql.ts';

// Listing syncs with their model (and its connection), destination, mappings and last run costs
// the same number of SQL statements for 5 syncs as for 50: every relation is batch-loaded, and
// every batch query is filtered on the caller's workspace.

t.test('no N+1: a page of syncs with nested relations costs a fixed number of statements', async (t) => {
  const g = await startGraphql(t);
  const actor = (await g.services.apiKeys.authenticate(g.h.token))!;
  const s = g.services;
  const sources = [await s.connections.create(actor, pgConnectionInput('src-a') as never), await s.connections.create(actor, pgConnectionInput('src-b') as never)];
  const dests = [await s.connections.create(actor, httpConnectionInput('dst-a') as never), await s.connections.create(actor, httpConnectionInput('dst-b') as never)];
  for (let i = 0; i < 50; i++) {
    const model = await s.models.create(actor, { slug: `m-${i}`, name: `M ${i}`, connectionId: sources[i % 2].id, sql: MODEL_SQL, primaryKey: 'id' }, { validate: false });
    const sync = await s.syncs.create(actor, {
      slug: `s-${i}`,
      name: `S ${i}`,
      modelId: model.id,
      destinationId: dests[i % 2].id,
      object: 'contacts',
      mode: 'upsert',
      matchKey: { sourceColumn: 'email', destinationField: 'email' },
    });
    await s.mappings.replaceAll(actor, sync.id, [
      { destinationField: 'email', source: { column: 'email' } },
      { destinationField: 'firstname', source: { column: 'first_name' } },
      { destinationField: 'lastname', source: { static: 'x' } },
    ]);
    if (i % 3 === 0) await s.runs.trigger(actor, sync.id);
  }

  const query = `query($n: Int) {
    syncs(first: $n) {
      nodes {
        id slug
        model { id slug connection { id slug secretNames } }
        destination { id slug }
        mappings { id destinationField source { __typename } }
        lastRun { id status }
      }
    }
  }`;
  // Warm up (parsing). The key's last_used_at write (at most once a minute) is left out of the counts.
  await g.data(query, { n: 1 });

  const count = async (n: number) => {
    g.statements.length = 0;
    const data = await g.data(query, { n });
    const statements = g.statements.filter((q) => !/^update "api_keys"/i.test(q));
    return { data, statements };
  };

  const five = await count(5);
  const fifty = await count(50);
  t.equal(five.data.syncs.nodes.length, 5);
  t.equal(fifty.data.syncs.nodes.length, 50);
  for (const [i, node] of fifty.data.syncs.nodes.entries()) {
    t.equal(node.model.slug, `m-${i}`);
    t.equal(node.model.connection.slug, i % 2 ? 'src-b' : 'src-a');
    t.equal(node.destination.slug, i % 2 ? 'dst-b' : 'dst-a');
    t.equal(node.mappings.length, 3);
    t.equal(node.lastRun === null, i % 3 !== 0, `lastRun of sync ${i}`);
  }
  t.equal(fifty.statements.length, five.statements.length, `the same number of statements for 5 and 50 syncs: ${five.statements.length}`);
  // key lookup, syncs page, models, connections (destinations and models' connections), mappings, last runs
  t.ok(fifty.statements.length <= 7, `few statements (${fifty.statements.length}):\n${fifty.statements.join('\n')}`);

  // Every batch read is workspace-filtered.
  for (const q of fifty.statements) {
    if (/from "(connections|models|syncs|mappings|runs)"/.test(q)) t.match(q, /"workspace_id" = \$/, `workspace filter in: ${q.slice(0, 120)}`);
  }
});
