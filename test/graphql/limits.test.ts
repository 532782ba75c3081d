import { readFileSync } from 'node:fs';
import { getIntrospectionQuery } from 'graphql';
import t from 'tap';
import { graphqlSdl } from '../../src/graphql/schema.ts';
import { startGraphql } from '../helpers/graphql.ts';

// Every limit answers 400 with a GraphQL body and its own code, before anything runs.

t.test('query limits', async (t) => {
  const g = await startGraphql(t);

  // Depth: 11 levels (the limit is 10), directly and through fragments.
  const deep = `{ sync(ref: "x") { model { syncs { nodes { model { syncs { nodes { model { syncs { nodes { id } } } } } } } } } } }`;
  const r1 = await g.gql(deep);
  t.equal(r1.status, 400);
  t.equal(r1.body.errors[0].extensions.code, 'query_too_deep');
  t.equal(r1.body.errors[0].extensions.depth, 11);
  t.equal(r1.body.data, null);
  const viaFragments = `
    query { sync(ref: "x") { ...A } }
    fragment A on Sync { model { syncs { nodes { ...B } } } }
    fragment B on Sync { model { syncs { nodes { model { syncs { nodes { id } } } } } } }`;
  t.equal((await g.gql(viaFragments)).body.errors[0].extensions.code, 'query_too_deep');
  const ten = `{ sync(ref: "x") { model { syncs { nodes { model { syncs { nodes { model { id } } } } } } } } }`;
  t.same((await g.gql(ten)).body, { data: { sync: null } }, '10 levels pass');

  // Cost: nested pages multiply; the page size may come from a variable.
  const nested = `query($n: Int) { syncs(first: $n) { nodes { id runs(first: $n) { nodes { id counts { queried } } } } } }`;
  const big = await g.gql(nested, { n: 200 });
  t.equal(big.status, 400);
  t.equal(big.body.errors[0].extensions.code, 'query_too_complex');
  t.ok(big.body.errors[0].extensions.cost > big.body.errors[0].extensions.limit);
  t.same((await g.gql(nested, { n: 20 })).body, { data: { syncs: { nodes: [] } } }, 'the same query with small pages runs');
  const defaults = await g.gql(`{ syncs { nodes { model { syncs { nodes { runs { nodes { id } } } } } } } }`);
  t.equal(defaults.body.errors[0].extensions.code, 'query_too_complex', 'pages default to 50 in the estimate');
  // Fields that reach a remote system weigh more.
  const remote = await g.gql(`{ models(first: 200) { nodes { columns { name } } } }`);
  t.equal(remote.body.errors[0].extensions.code, 'query_too_complex');
  t.same((await g.gql(`{ models(first: 10) { nodes { columns { name } } } }`)).body, { data: { models: { nodes: [] } } });

  // Aliases.
  const aliases = `{ ${Array.from({ length: 31 }, (_, i) => `a${i}: viewer { owner }`).join(' ')} }`;
  const r3 = await g.gql(aliases);
  t.equal(r3.status, 400);
  t.equal(r3.body.errors[0].extensions.code, 'too_many_aliases');
  const aliasesOk = `{ ${Array.from({ length: 30 }, (_, i) => `a${i}: viewer { owner }`).join(' ')} }`;
  t.equal((await g.gql(aliasesOk)).body.data.a29.owner, true);

  // Batched operations.
  const batch = async (n: number) => {
    const res = await fetch(`${g.url}/graphql`, {
      method: 'POST',
      headers: { authorization: `Bearer ${g.h.token}`, 'content-type': 'application/json' },
      body: JSON.stringify(Array.from({ length: n }, () => ({ query: '{ viewer { owner } }' }))),
    });
    return { status: res.status, body: (await res.json()) as any };
  };
  const two = await batch(2);
  t.equal(two.status, 200);
  t.same(two.body, [{ data: { viewer: { owner: true } } }, { data: { viewer: { owner: true } } }]);
  const eleven = await batch(11);
  t.equal(eleven.status, 400);
  t.equal(eleven.body.errors[0].extensions.code, 'too_many_operations');

  // Body size: the HTTP body limit (BACKHAUL_BODY_LIMIT_BYTES, 1 MiB by default).
  const huge = await g.gql(`{ viewer { owner } } # ${'x'.repeat(1_100_000)}`);
  t.equal(huge.status, 413);
  t.equal(huge.body.errors[0].extensions.code, 'body_too_large');

  // Introspection is not bounded by depth (its type references nest deep), only by the key.
  const intro = await g.gql(getIntrospectionQuery());
  t.equal(intro.status, 200);
  t.ok(intro.body.data.__schema.types.some((x: any) => x.name === 'Sync'));
});

t.test('limits are configurable', async (t) => {
  const g = await startGraphql(t, { limits: { maxDepth: 3, maxAliases: 1, maxBatch: 1 } });
  t.equal((await g.gql(`{ syncs { nodes { model { id } } } }`)).body.errors[0].extensions.code, 'query_too_deep');
  t.equal((await g.gql(`{ a: viewer { owner } b: viewer { owner } }`)).body.errors[0].extensions.code, 'too_many_aliases');
});

t.test('the committed SDL is generated from the code', async (t) => {
  t.equal(readFileSync('openapi/schema.graphql', 'utf8'), graphqlSdl(), 'run `npm run generate` after changing src/graphql/schema.ts');
});
