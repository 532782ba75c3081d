import t from 'tap';
import { startTestBackhaul } from '../helpers/backhaul.ts';

// Lists a UI needs: ordered by name, slug or last update, searched by name or slug, paged with
// stable keyset cursors (REST and GraphQL share the cursors).

t.test('ordering, search and keyset pagination of connections', async (t) => {
  const h = await startTestBackhaul(t);
  const names = ['Delta', 'alpha', 'Charlie', 'bravo', 'Echo', 'Alpha two'];
  for (const [i, name] of names.entries()) {
    const r = await h.request('POST', '/v1/connections', {
      body: { slug: `c${i}-${name.toLowerCase().replace(/ /g, '-')}`, name, type: 'postgres', config: { host: 'db', database: 'x', user: 'u' } },
    });
    t.equal(r.status, 201);
  }
  const all = async (query: string) => {
    const out: string[] = [];
    let cursor: string | null = null;
    do {
      const r = await h.request('GET', `/v1/connections?limit=2&${query}${cursor ? `&cursor=${cursor}` : ''}`);
      t.equal(r.status, 200, JSON.stringify(r.body));
      out.push(...r.body.data.map((c: { name: string }) => c.name));
      cursor = r.body.nextCursor;
    } while (cursor);
    return out;
  };
  const byName = [...names].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  t.same(await all('orderBy=name'), byName, 'by name, across pages of 2');
  t.same(await all('orderBy=name&direction=desc'), [...byName].reverse());
  t.same(await all('orderBy=createdAt'), names, 'creation order by default');
  t.same(await all('search=ALPHA&orderBy=slug'), ['alpha', 'Alpha two'], 'search is case-insensitive on name and slug');

  // Touch one: it moves to the end of the updatedAt ordering.
  const list = await h.request('GET', '/v1/connections?limit=200');
  const charlie = list.body.data.find((c: { name: string }) => c.name === 'Charlie');
  await new Promise((r) => setTimeout(r, 5));
  await h.request('PATCH', `/v1/connections/${charlie.id}`, { body: { name: 'Charlie 2' } });
  const byUpdate = await all('orderBy=updatedAt');
  t.equal(byUpdate.at(-1), 'Charlie 2');
  t.equal(byUpdate.length, 6, 'no item lost or repeated');

  const first = await h.request('GET', '/v1/connections?limit=2&orderBy=name');
  const mixed = await h.request('GET', `/v1/connections?limit=2&orderBy=slug&cursor=${first.body.nextCursor}`);
  t.equal(mixed.status, 400);
  t.equal(mixed.body.code, 'invalid_cursor', "a cursor only continues the ordering it was made for");
  const bad = await h.request('GET', '/v1/connections?orderBy=secret');
  t.equal(bad.status, 400);

  const gql = await h.request('POST', '/graphql', {
    body: { query: '{ connections(first: 3, orderBy: { field: name, direction: desc }) { edges { cursor node { name } } pageInfo { hasNextPage endCursor } } }' },
  });
  const current = names.map((n) => (n === 'Charlie' ? 'Charlie 2' : n)).sort().reverse();
  t.same(gql.body.data.connections.edges.map((e: any) => e.node.name), current.slice(0, 3));
  const next = await h.request('POST', '/graphql', {
    body: { query: `{ connections(first: 10, after: "${gql.body.data.connections.edges[2].cursor}", orderBy: { field: name, direction: desc }) { nodes { name } } }` },
  });
  t.equal(next.body.data.connections.nodes.length, 3, 'an edge cursor continues after that edge');
});
