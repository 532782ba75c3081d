import t from 'tap';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { paths, setAt } from '../helpers/mutate.ts';
import { graph, httpConnection, modelBody, ok, pgConnection, syncBody } from '../helpers/http-fixtures.ts';

// Whatever a user sends, the answer is never a 500: every field of every write gets values of
// the wrong type, huge strings, odd unicode, nulls, arrays and objects.

const HUGE = 'x'.repeat(200_000);
const VALUES: unknown[] = [
  null,
  0,
  -1,
  1.5,
  1e308,
  true,
  '',
  ' ',
  'a\u0000b',
  '\u0000',
  '\ud800',
  '💥 ünïcödé ☃ \u202e',
  'Robert"); drop table connections;--',
  '../../etc/passwd',
  HUGE,
  [],
  [1, 'two', null],
  {},
  { nested: { deeper: [null] } },
  { __proto__: { polluted: true } },
  { constructor: { prototype: { polluted: true } } },
];

t.test('no 500 for user input', async (t) => {
  const h = await startTestBackhaul(t);
  const g = await graph(h, 'z');
  const mapping = await ok(h.request('POST', `/v1/syncs/${g.sync.id}/mappings`, { body: { destinationField: 'email', source: { column: 'email' } } }));

  const failures: string[] = [];
  const plain: string[] = [];
  let sent = 0;
  const send = async (method: string, path: string, opts: Parameters<typeof h.request>[2] = {}) => {
    sent++;
    let r;
    try {
      r = await h.request(method, path, opts);
    } catch (e) {
      failures.push(`${method} ${path}: request failed: ${(e as Error).message}`);
      return;
    }
    if (r.status >= 500) failures.push(`${method} ${path} ${JSON.stringify(opts.body ?? opts.rawBody ?? null).slice(0, 200)} → ${r.status} ${r.text.slice(0, 200)}`);
    else if (r.status >= 400 && !r.headers.get('content-type')?.startsWith('application/problem+json')) plain.push(`${method} ${path}: ${r.status} without problem+json`);
  };

  const templates: [string, string, unknown][] = [
    ['POST', '/v1/connections', pgConnection('fz-conn', { secrets: { password: 'p' } })],
    ['POST', '/v1/connections', httpConnection('fz-http', { secrets: { token: { env: 'X' } } })],
    ['PATCH', `/v1/connections/${g.src.id}`, { name: 'n', config: { host: 'h', port: 5432 }, secrets: { password: 'p' } }],
    ['PUT', '/v1/connections/fz-put', pgConnection('fz-put')],
    ['POST', '/v1/models?validate=false', modelBody('fz-model', g.src.id)],
    ['PATCH', `/v1/models/${g.model.id}?validate=false`, { name: 'n', sql: 'select 1 as id', primaryKey: 'id', connectionId: g.src.slug }],
    ['PUT', '/v1/models/fz-put?validate=false', modelBody('fz-put', g.src.id)],
    [
      'POST',
      '/v1/syncs',
      syncBody('fz-sync', g.model.id, g.dst.id, {
        schedule: { type: 'cron', expression: '0 * * * *', timezone: 'UTC' },
        enabled: true,
        delivery: { batchSize: 1, concurrency: 1, maxRequestsPerSecond: 1, maxRetries: 1 },
        alerts: { channelIds: ['ach_x'], onFailure: true, rowFailurePercent: 1, maxDurationSeconds: 1, consecutiveFailures: 1 },
      }),
    ],
    ['PATCH', `/v1/syncs/${g.sync.id}`, { schedule: { type: 'interval', everySeconds: 60 }, matchKey: { sourceColumn: 'a', destinationField: 'b' }, object: 'contacts' }],
    ['PUT', '/v1/syncs/fz-put', syncBody('fz-put', g.model.slug, g.dst.slug)],
    ['POST', `/v1/syncs/${g.sync.id}/mappings`, { destinationField: 'f', source: { lookup: { object: 'o', matchField: 'm', sourceColumn: 's', resultField: 'r' } } }],
    ['POST', `/v1/syncs/${g.sync.id}/mappings`, { destinationField: 'f', source: { template: '{{a}}' } }],
    ['PATCH', `/v1/syncs/${g.sync.id}/mappings/${mapping.id}`, { destinationField: 'f', source: { static: 1 } }],
    ['PUT', `/v1/syncs/${g.sync.id}/mappings/${mapping.id}`, { destinationField: 'f', source: { column: 'c' } }],
    ['PUT', `/v1/syncs/${g.sync.id}/mappings`, [{ destinationField: 'f', source: { column: 'c' } }]],
    ['POST', '/v1/api-keys', { name: 'k', scopes: ['read'] }],
    ['POST', '/v1/workspaces', { slug: 'fz-ws', name: 'n' }],
    ['POST', `/v1/models/${g.model.id}/preview`, { limit: 1, timeoutMs: 1000 }],
  ];

  for (const [method, path, body] of templates) {
    for (const p of paths(body)) {
      for (const v of VALUES) await send(method, path, { body: setAt(body, p, v) });
    }
    // whole bodies of the wrong shape
    for (const v of [null, 0, 'str', true, [], [body], {}, HUGE]) await send(method, path, { body: v });
    await send(method, path, { rawBody: '{"a":', headers: { 'content-type': 'application/json' } });
    await send(method, path, { rawBody: '\u0000', headers: { 'content-type': 'application/json' } });
    await send(method, path, { rawBody: '{"slug":"\\u0000"}', headers: { 'content-type': 'application/json' } });
    await send(method, path, { rawBody: '{"__proto__":{"x":1}}', headers: { 'content-type': 'application/json' } });
    await send(method, path, { rawBody: JSON.stringify(body), headers: { 'content-type': 'application/json; charset=latin1' } });
    await send(method, path, { rawBody: JSON.stringify(body), headers: { 'content-type': 'application/xml' } });
    await send(method, path, { rawBody: JSON.stringify(body) });
  }

  // odd refs, query strings and headers
  const refs = ['a'.repeat(300), 'conn_', 'conn_%00', '%F0%9F%92%A5', '..%2F..', '%ZZ', 'x%0Ay', '__proto__', 'constructor', ' ', '%20'];
  for (const ref of refs) {
    for (const base of ['/v1/connections', '/v1/models', '/v1/syncs']) {
      await send('GET', `${base}/${ref}`);
      await send('PATCH', `${base}/${ref}`, { body: { name: 'n' } });
      await send('PUT', `${base}/${ref}?validate=false`, { body: { name: 'n' } });
      await send('DELETE', `${base}/${ref}`);
    }
    await send('GET', `/v1/syncs/${ref}/mappings/${ref}`);
    await send('DELETE', `/v1/api-keys/${ref}`);
  }
  const queries = ['limit=1e3', 'limit=NaN', 'limit=', 'limit=1&limit=2', 'cursor=' + 'A'.repeat(499), 'cursor=' + 'A'.repeat(600), 'cursor=%00', 'cursor[]=x', 'enabled=maybe', 'type=%F0%9F%92%A5'];
  for (const q of queries) {
    for (const base of ['/v1/connections', '/v1/models', '/v1/syncs', '/v1/api-keys', '/v1/workspaces', `/v1/syncs/${g.sync.id}/mappings`]) await send('GET', `${base}?${q}`);
  }
  for (const q of ['since=0', 'since=2024-13-45T99:99:99Z', 'until=%00', 'resourceId=%00', 'resourceType=a%00', 'resourceType=' + 'x'.repeat(60), 'resourceId=%F0%9F%92%A5']) await send('GET', `/v1/audit-events?${q}`);
  for (const im of ['', '""', '"abc"', 'W/', '*, "1"', '"99999999999999999999"', ',,,', 'W/"-1"']) {
    await send('PATCH', `/v1/connections/${g.src.id}`, { body: { name: 'n' }, headers: { 'if-match': im } });
    await send('DELETE', `/v1/models/nope`, { headers: { 'if-match': im } });
  }
  for (const key of ['', ' ', 'k'.repeat(255), 'k'.repeat(256), 'ünï']) {
    await send('POST', '/v1/api-keys', { body: { name: 'idem', scopes: ['read'] }, headers: { 'idempotency-key': Buffer.from(key).toString('latin1') } });
  }
  for (const auth of ['Bearer ', 'Bearer bh_', `Bearer bh_${'a'.repeat(300)}`, 'bearer  bh_x', 'Bearer \u00ff']) {
    await send('GET', '/v1/connections', { token: null, headers: { authorization: auth } });
  }
  await send('GET', '/v1/connections', { headers: { 'x-request-id': 'x'.repeat(5000) } });

  t.ok(sent > 1000, `sent ${sent} requests`);
  t.same(failures, [], 'no 5xx');
  // A path with bad percent-encoding is refused by fastify's router before any of our handlers;
  // only the Fastify constructor option `frameworkErrors` (src/http/app.ts) can make it problem+json.
  const badUrl = plain.filter((p) => p.includes('%ZZ'));
  t.same(plain.filter((p) => !p.includes('%ZZ')), [], 'every 4xx is problem+json');
  t.same(badUrl, [], 'a badly percent-encoded path answers problem+json');
  // the server is still healthy afterwards
  t.equal((await h.request('GET', '/readyz', { token: null })).status, 200);
});
