import t from 'tap';
import { httpType } from '../../src/connectors/http-type.ts';
import { nextLink } from '../../src/connectors/destinations/http-lookup.ts';
import type { DestinationConnector } from '../../src/connectors/types.ts';
import { validateConnectorConfig } from '../../src/lib/validate.ts';
import { startFakePagedApi, type FakePagedApi } from '../fakes/paged-api.ts';

// The generic HTTP destination's GET lookup, following each pagination style over three pages.

let api: FakePagedApi;
t.before(async () => {
  api = await startFakePagedApi([
    { id: 1, email: 'ann@example.com', name: 'Ann' },
    { id: 2, email: 'bob@example.com', name: 'Bob' },
    { id: 3, email: 'cy@example.com', name: 'Cy' },
    { id: 4, email: 'dee@example.com', name: 'Dee' },
    { id: 5, email: 'eve@example.com', name: 'Eve' },
    { id: 6, email: 'fay@example.com', name: 'Fay' },
    { id: 7, email: 'gus@example.com', name: 'Gus' },
    { id: 8, email: 'Gus@Example.com', name: 'Gus again' },
  ]);
  t.teardown(() => api.close());
});

const styles = {
  cursor: { path: '/cursor/users?limit=3', recordsPointer: '/data', pagination: { type: 'cursor', cursorPointer: '/next_cursor', cursorParam: 'after' } },
  link: { path: '/link/users?per_page=3', pagination: { type: 'link' } },
  page: { path: '/page/users', recordsPointer: '/items', pagination: { type: 'page', pageParam: 'page', pageSizeParam: 'per_page', pageSize: 3 } },
};

function open(lookups: Record<string, unknown>[]): DestinationConnector {
  const config = validateConnectorConfig(httpType.configSchema, {
    baseUrl: api.url,
    objects: [{ name: 'users', fields: [{ name: 'email', identifier: true }], operations: { upsert: { method: 'PUT', path: '/users/{{email}}' } } }],
    lookups,
  });
  return httpType.openDestination!(config, {}, { denyPrivateNetworks: false });
}

for (const [style, cfg] of Object.entries(styles)) {
  t.test(`${style} pagination: a value on the third page resolves; every match is kept`, async (t) => {
    const d = open([{ object: 'users', ...cfg }]);
    t.ok(d.capabilities().lookup);
    const before = api.requests.length;
    const r = await d.lookup!({ object: 'users', matchField: 'email', resultField: 'name', values: ['ann@example.com', 'gus@example.com', 'zed@example.com'], caseInsensitive: true });
    t.same(r.get('ann@example.com'), [{ id: '1', value: 'Ann' }]);
    t.same(r.get('gus@example.com'), [{ id: '7', value: 'Gus' }, { id: '8', value: 'Gus again' }], 'both records on page 3');
    t.notOk(r.get('zed@example.com')?.length);
    const pages = api.requests.length - before;
    t.ok(pages >= 3 && pages <= 4, `${pages} requests for three pages`);
    // The listing is read once per connector (run).
    await d.lookup!({ object: 'users', matchField: 'email', resultField: 'id', values: ['bob@example.com'] });
    t.equal(api.requests.length - before, pages);
  });
}

t.test('valueParam: one filtered listing per value', async (t) => {
  const d = open([{ object: 'users', ...styles.cursor, valueParam: 'email' }]);
  const before = api.requests.length;
  const r = await d.lookup!({ object: 'users', matchField: 'email', resultField: 'id', values: ['cy@example.com', 'fay@example.com'] });
  t.same(r.get('cy@example.com'), [{ id: '3', value: 3 }]);
  t.same(r.get('fay@example.com'), [{ id: '6', value: 6 }]);
  t.same(api.requests.slice(before).map((p) => new URL(p, 'http://x').searchParams.get('email')), ['cy@example.com', 'fay@example.com']);
});

t.test('a Link to another host is not followed; an unknown lookup object is a config error', async (t) => {
  api.linkOrigin = 'http://127.0.0.2:1';
  t.teardown(() => void (api.linkOrigin = undefined));
  const d = open([{ object: 'users', ...styles.link }]);
  await t.rejects(d.lookup!({ object: 'users', matchField: 'email', resultField: 'id', values: ['gus@example.com'] }), { code: 'unexpected_redirect' });
  await t.rejects(d.lookup!({ object: 'owners', matchField: 'email', resultField: 'id', values: ['x'] }), { code: 'lookup_not_configured', classification: 'fatal' });
  t.notOk(open([]).capabilities().lookup, 'no lookups configured: the connection cannot look up');
});

t.test('nextLink reads rel="next" among other relations', async (t) => {
  t.equal(nextLink('<https://a/x?page=2>; rel="next", <https://a/x?page=9>; rel="last"'), 'https://a/x?page=2');
  t.equal(nextLink('<https://a/x?page=1>; rel="prev", <https://a/x?page=3>; rel=next'), 'https://a/x?page=3');
  t.equal(nextLink('<https://a/x?page=1>; rel="prev nextish"'), undefined);
  t.equal(nextLink('<https://a/x?page=4>; rel="last next"'), 'https://a/x?page=4');
  t.equal(nextLink(undefined), undefined);
});
