import t, { type Test } from 'tap';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { controlDb, graph, httpConnection, modelBody, ok, pgConnection, PROBLEM_TYPE, syncBody } from '../helpers/http-fixtures.ts';

// Input validation: every 4xx is problem+json with a code (and a path per field error), and a
// failing request leaves nothing behind: no row, no audit event.

const LIMIT = 4096;

t.test('validation', async (t) => {
  const h = await startTestBackhaul(t, { env: { BACKHAUL_BODY_LIMIT_BYTES: String(LIMIT) } });
  const sql = controlDb(h);
  t.teardown(() => sql.end());
  const g = await graph(h, 'v');

  const counts = async () => {
    const [r] = await sql`select
      (select count(*) from connections)::int as connections,
      (select count(*) from models)::int as models,
      (select count(*) from syncs)::int as syncs,
      (select count(*) from mappings)::int as mappings,
      (select count(*) from api_keys)::int as api_keys,
      (select count(*) from workspaces)::int as workspaces,
      (select count(*) from audit_events)::int as audit,
      (select max(version) from connections)::int as cv,
      (select max(version) from models)::int as mv,
      (select max(version) from syncs)::int as sv`;
    return r;
  };
  const before = await counts();

  /** Sends a request that must fail with `status` and `code`; checks the problem document. */
  const fails = async (t: Test, name: string, status: number, code: string, method: string, path: string, opts: Parameters<typeof h.request>[2] = {}) => {
    const r = await h.request(method, path, opts);
    t.equal(r.status, status, `${name}: ${status}`);
    t.equal(r.headers.get('content-type'), PROBLEM_TYPE, `${name}: problem+json`);
    t.equal(r.body?.code, code, `${name}: code ${code}`);
    t.equal(r.body?.status, status, `${name}: status member`);
    t.match(r.body, { type: String, title: String, detail: String }, `${name}: RFC 9457 members`);
    return r;
  };

  t.test('unknown fields are rejected with their path', async (t) => {
    let r = await fails(t, 'top-level', 400, 'validation_failed', 'POST', '/v1/connections', { body: { ...pgConnection('x1'), colour: 'red' } });
    t.same(r.body.errors, [{ path: '/colour', message: 'is not a known field' }]);
    r = await fails(t, 'nested (delivery)', 400, 'validation_failed', 'POST', '/v1/syncs', { body: syncBody('x2', g.model.id, g.dst.id, { delivery: { batchSize: 5, turbo: true } }) });
    t.same(r.body.errors, [{ path: '/delivery/turbo', message: 'is not a known field' }]);
    r = await fails(t, 'nested (matchKey)', 400, 'validation_failed', 'PATCH', `/v1/syncs/${g.sync.id}`, { body: { matchKey: { sourceColumn: 'a', destinationField: 'b', extra: 1 } } });
    t.same(r.body.errors, [{ path: '/matchKey/extra', message: 'is not a known field' }]);
    r = await fails(t, 'connector config', 400, 'validation_failed', 'POST', '/v1/connections', { body: pgConnection('x3', { config: { host: 'h', database: 'd', user: 'u', hots: 'typo' } }) });
    t.same(r.body.errors, [{ path: '/config/hots', message: 'is not a known field' }]);
    r = await fails(t, 'patch', 400, 'validation_failed', 'PATCH', `/v1/models/${g.model.id}`, { body: { primarykey: 'id' } });
    t.same(r.body.errors, [{ path: '/primarykey', message: 'is not a known field' }]);
    r = await fails(t, 'api key', 400, 'validation_failed', 'POST', '/v1/api-keys', { body: { name: 'k', scopes: ['read'], owner: true } });
    t.same(r.body.errors, [{ path: '/owner', message: 'is not a known field' }]);
  });

  t.test('wrong types: one error per field, each with its path', async (t) => {
    const r = await fails(t, 'types', 400, 'validation_failed', 'POST', '/v1/connections', { body: { slug: 5, name: true, type: [], config: 'x' } });
    const paths = r.body.errors.map((e: { path: string }) => e.path).sort();
    t.same(paths, ['/config', '/name', '/slug', '/type']);
    const r2 = await fails(t, 'sync types', 400, 'validation_failed', 'POST', '/v1/syncs', {
      body: { ...syncBody('t1', g.model.id, g.dst.id), enabled: 'yes', delivery: { batchSize: '10' }, schedule: { type: 'interval', everySeconds: 1 } },
    });
    const p2 = r2.body.errors.map((e: { path: string }) => e.path);
    t.ok(p2.includes('/enabled'), '/enabled');
    t.ok(p2.includes('/delivery/batchSize'), '/delivery/batchSize (no coercion of "10")');
    t.ok(p2.some((p: string) => p.startsWith('/schedule')), '/schedule');
    await fails(t, 'missing required', 400, 'validation_failed', 'POST', '/v1/models', { body: { slug: 'm' } }).then((r) =>
      t.same(r.body.errors.map((e: { path: string }) => e.path).sort(), ['/connectionId', '/name', '/primaryKey', '/sql']),
    );
    await fails(t, 'bad slug', 400, 'validation_failed', 'POST', '/v1/connections', { body: pgConnection('Not_A_Slug') }).then((r) => t.equal(r.body.errors[0].path, '/slug'));
    await fails(t, 'empty name', 400, 'validation_failed', 'PATCH', `/v1/connections/${g.src.id}`, { body: { name: '' } });
    await fails(t, 'unknown scope', 400, 'validation_failed', 'POST', '/v1/api-keys', { body: { name: 'k', scopes: ['root'] } });
    await fails(t, 'bad mode', 400, 'validation_failed', 'PATCH', `/v1/syncs/${g.sync.id}`, { body: { mode: 'merge' } });
    // PostgreSQL stores neither NUL nor unpaired surrogates: refused up front, with the path.
    let nul = await fails(t, 'NUL in a string', 400, 'validation_failed', 'POST', '/v1/connections', { body: pgConnection('nul', { name: 'a\u0000b' }) });
    t.same(nul.body.errors, [{ path: '/name', message: 'must not contain NUL characters or unpaired surrogates' }]);
    nul = await fails(t, 'lone surrogate deep in config', 400, 'validation_failed', 'POST', '/v1/connections', { body: httpConnection('sur', { config: { ...httpConnection('x').config, headers: { 'x-a': 'b\ud800' } } }) });
    t.same(nul.body.errors.map((e: { path: string }) => e.path), ['/config/headers/x-a']);
    nul = await fails(t, 'NUL in a path parameter', 400, 'validation_failed', 'GET', '/v1/connections/conn_%00');
    t.equal(nul.body.errors[0].path, '/params/ref');
    await fails(t, 'NUL in a query parameter', 400, 'validation_failed', 'GET', '/v1/audit-events?resourceId=%00');
    const ok2 = await h.request('POST', '/v1/connections', { body: pgConnection('emoji', { name: 'Entrepôt 💾 ☃' }) });
    t.equal(ok2.status, 201, 'ordinary unicode (paired surrogates) is fine');
    t.equal(ok2.body.name, 'Entrepôt 💾 ☃');
    await ok(h.request('DELETE', `/v1/connections/${ok2.body.id}`), 204);
  });

  t.test('malformed, oversized and non-JSON bodies', async (t) => {
    await fails(t, 'malformed JSON', 400, 'malformed_json', 'POST', '/v1/connections', { rawBody: '{"slug": "x",', headers: { 'content-type': 'application/json' } });
    await fails(t, 'malformed JSON on PATCH', 400, 'malformed_json', 'PATCH', `/v1/connections/${g.src.id}`, { rawBody: "{'name': 1}", headers: { 'content-type': 'application/json' } });
    // An empty body is no body (issue 16 #7): a create that needs one lists what is required.
    await fails(t, 'empty JSON body', 400, 'validation_failed', 'POST', '/v1/connections', { rawBody: '', headers: { 'content-type': 'application/json' } });
    const big = { ...pgConnection('big'), name: 'n'.repeat(LIMIT) };
    await fails(t, 'over the limit', 413, 'body_too_large', 'POST', '/v1/connections', { body: big });
    await fails(t, 'text/plain', 415, 'unsupported_media_type', 'POST', '/v1/connections', { rawBody: JSON.stringify(pgConnection('txt')), headers: { 'content-type': 'text/plain' } });
    await fails(t, 'form', 415, 'unsupported_media_type', 'POST', '/v1/connections', { rawBody: 'slug=x', headers: { 'content-type': 'application/x-www-form-urlencoded' } });
    await fails(t, 'null body', 400, 'validation_failed', 'POST', '/v1/connections', { rawBody: 'null', headers: { 'content-type': 'application/json' } });
    await fails(t, 'array body', 400, 'validation_failed', 'POST', '/v1/connections', { body: [pgConnection('arr')] });
    const mp = await h.request('PATCH', `/v1/connections/${g.src.id}`, { rawBody: JSON.stringify({ name: 'Merge patched' }), headers: { 'content-type': 'application/merge-patch+json' } });
    t.equal(mp.status, 200, 'application/merge-patch+json is accepted on PATCH');
    t.equal(mp.body.name, 'Merge patched');
  });

  t.test('routes and methods', async (t) => {
    await fails(t, 'unknown route', 404, 'route_not_found', 'GET', '/v1/nothing-here');
    await fails(t, 'unknown route, no key', 404, 'route_not_found', 'GET', '/v2/connections', { token: null });
    await fails(t, 'unknown nested route', 404, 'route_not_found', 'GET', `/v1/connections/${g.src.id}/nothing`);
    let r = await fails(t, 'wrong method (collection)', 405, 'method_not_allowed', 'DELETE', '/v1/connections');
    t.same(r.headers.get('allow')?.split(/,\s*/).sort(), ['GET', 'POST']);
    r = await fails(t, 'wrong method (item)', 405, 'method_not_allowed', 'POST', `/v1/models/${g.model.id}`);
    t.same(r.headers.get('allow')?.split(/,\s*/).sort(), ['DELETE', 'GET', 'PATCH', 'PUT']);
    r = await fails(t, 'wrong method (workspaces)', 405, 'method_not_allowed', 'DELETE', '/v1/workspaces');
    t.same(r.headers.get('allow')?.split(/,\s*/).sort(), ['GET', 'POST']);
  });

  t.test('connector config, type and secrets', async (t) => {
    let r = await fails(t, 'port "abc"', 400, 'validation_failed', 'POST', '/v1/connections', { body: pgConnection('c1', { config: { host: 'h', database: 'd', user: 'u', port: 'abc' } }) });
    t.same(r.body.errors, [{ path: '/config/port', message: 'must be integer' }]);
    r = await fails(t, 'port out of range', 400, 'validation_failed', 'POST', '/v1/connections', { body: pgConnection('c1', { config: { host: 'h', database: 'd', user: 'u', port: 70000 } }) });
    t.equal(r.body.errors[0].path, '/config/port');
    r = await fails(t, 'missing required config', 400, 'validation_failed', 'POST', '/v1/connections', { body: pgConnection('c1', { config: { host: 'h' } }) });
    t.same(r.body.errors.map((e: { path: string }) => e.path).sort(), ['/config/database', '/config/user']);
    r = await fails(t, 'http: objects required, baseUrl a URL', 400, 'validation_failed', 'POST', '/v1/connections', { body: httpConnection('c2', { config: { baseUrl: 'ftp://x' } }) });
    t.ok(r.body.errors.some((e: { path: string }) => e.path === '/config/objects'));
    t.ok(r.body.errors.some((e: { path: string }) => e.path === '/config/baseUrl'));
    r = await fails(t, 'unknown type', 400, 'unknown_connector_type', 'POST', '/v1/connections', { body: pgConnection('c3', { type: 'oracle' }) });
    t.equal(r.body.errors[0].path, '/type');
    r = await fails(t, 'unknown secret', 400, 'validation_failed', 'POST', '/v1/connections', { body: pgConnection('c4', { secrets: { password: 'x', apiKey: 'y' } }) });
    t.same(r.body.errors.map((e: { path: string }) => e.path), ['/secrets/apiKey']);
    r = await fails(t, 'unknown secret on PATCH', 400, 'validation_failed', 'PATCH', `/v1/connections/${g.src.id}`, { body: { secrets: { token: 'x' } } });
    t.equal(r.body.errors[0].path, '/secrets/token');
    r = await fails(t, 'bad env reference', 400, 'validation_failed', 'POST', '/v1/connections', { body: pgConnection('c5', { secrets: { password: { env: 'not a name' } } }) });
    await fails(t, 'env reference with extra field', 400, 'validation_failed', 'POST', '/v1/connections', { body: pgConnection('c5', { secrets: { password: { env: 'X', value: 'y' } } }) });
  });

  t.test('syncs: modes, objects, schedules, references', async (t) => {
    const upsertOnly = await ok(
      h.request('POST', '/v1/connections', {
        body: httpConnection('upsert-only', {
          config: { baseUrl: 'http://127.0.0.1:9', objects: [{ name: 'contacts', fields: [{ name: 'email' }], operations: { upsert: { method: 'POST', path: '/c' } } }] },
        }),
      }),
    );
    let r = await fails(t, 'mirror needs delete', 422, 'unsupported_mode', 'POST', '/v1/syncs', { body: syncBody('s1', g.model.id, upsertOnly.id, { mode: 'mirror' }) });
    t.equal(r.body.errors[0].path, '/mode');
    await fails(t, 'insert needs insert', 422, 'unsupported_mode', 'POST', '/v1/syncs', { body: syncBody('s1', g.model.id, upsertOnly.id, { mode: 'insert' }) });
    await fails(t, 'PATCH to an unsupported mode', 422, 'unsupported_mode', 'PATCH', `/v1/syncs/${g.sync.id}`, { body: { destinationId: upsertOnly.id, mode: 'mirror' } });
    await ok(h.request('POST', '/v1/syncs', { body: syncBody('s-upsert', g.model.id, upsertOnly.id, { mode: 'upsert' }) }));
    r = await fails(t, 'unknown object', 422, 'unknown_object', 'POST', '/v1/syncs', { body: syncBody('s2', g.model.id, g.dst.id, { object: 'deals' }) });
    t.equal(r.body.errors[0].path, '/object');

    for (const [name, schedule, path] of [
      ['four fields', { type: 'cron', expression: '0 6 * *' }, '/schedule/expression'],
      ['bad field', { type: 'cron', expression: '61 6 * * *' }, '/schedule/expression'],
      ['words', { type: 'cron', expression: 'every monday please' }, '/schedule/expression'],
      ['timezone', { type: 'cron', expression: '0 6 * * *', timezone: 'Mars/Olympus' }, '/schedule/timezone'],
    ] as const) {
      r = await fails(t, `cron: ${name}`, 400, 'invalid_schedule', 'POST', '/v1/syncs', { body: syncBody('s3', g.model.id, g.dst.id, { schedule }) });
      t.equal(r.body.errors[0].path, path);
    }
    await fails(t, 'cron on PATCH', 400, 'invalid_schedule', 'PATCH', `/v1/syncs/${g.sync.id}`, { body: { schedule: { type: 'cron', expression: '* * * * * * *' } } });
    await fails(t, 'interval too short', 400, 'validation_failed', 'POST', '/v1/syncs', { body: syncBody('s3', g.model.id, g.dst.id, { schedule: { type: 'interval', everySeconds: 1 } }) });
    const good = await ok(h.request('POST', '/v1/syncs', { body: syncBody('s-cron', g.model.id, g.dst.id, { schedule: { type: 'cron', expression: ' 0 6 * * 1-5 ' } }) }));
    t.same(good.schedule, { type: 'cron', expression: '0 6 * * 1-5', timezone: 'UTC' }, 'normalised, UTC by default');

    r = await fails(t, 'model ref is a connection', 422, 'invalid_reference', 'POST', '/v1/syncs', { body: syncBody('s4', g.src.id, g.dst.id) });
    t.equal(r.body.errors[0].path, '/modelId');
    r = await fails(t, 'destination ref is a model', 422, 'invalid_reference', 'POST', '/v1/syncs', { body: syncBody('s4', g.model.id, g.model.id) });
    t.equal(r.body.errors[0].path, '/destinationId');
    r = await fails(t, 'model on a destination-only connection', 422, 'invalid_reference', 'POST', '/v1/models?validate=false', { body: modelBody('m1', g.dst.id) });
    t.same(r.body.errors, [{ path: '/connectionId', message: 'must be a connection with the "source" role' }]);
    await fails(t, 'model ref missing', 422, 'invalid_reference', 'PUT', '/v1/models/m2?validate=false', { body: modelBody('m2', 'no-such-conn') });
  });

  t.test('a failing request leaves no row and no audit event', async (t) => {
    const after = await counts();
    t.same(after, { ...before, connections: before.connections + 1, syncs: before.syncs + 2, audit: before.audit + 6, cv: before.cv + 1 }, 'only the successful writes (connection rename, 1 connection, 2 syncs, 1 created and deleted) left a trace');
    const ev = await sql`select action, resource_type from audit_events order by id desc limit 6`;
    t.same(ev.map((e) => `${e.action} ${e.resource_type}`).sort(), ['create connection', 'create connection', 'create sync', 'create sync', 'delete connection', 'update connection']);
  });
});
