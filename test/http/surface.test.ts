import pino from 'pino';
import t from 'tap';
import { buildApp } from '../../src/http/app.ts';
import { startTestBackhaul, type TestBackhaul } from '../helpers/backhaul.ts';
import { CHROMIUM_PATH, launchChromium } from '../helpers/chromium.ts';
import { graph, PROBLEM_TYPE } from '../helpers/http-fixtures.ts';

// The HTTP surface around the resources: what browsers, HTTP helpers and scrapers meet first.
// - issue 16 #7: a bodyless request that says Content-Type: application/json is a request
//   without a body (action routes take an optional body), not malformed JSON;
// - issue 13 #11: JSON nested thousands of levels deep answers 400 body_too_deep, never a 500;
// - issue 16 #1: /docs, /docs/json and /docs/static/* are public; public routes carry no lock in
//   the OpenAPI document; every 401 is problem+json;
// - issue 16 #11: CORS preflights are cached (Access-Control-Max-Age) and allow the
//   OpenTelemetry headers traceparent and tracestate;
// - issue 13 #12: /metrics is not public by default when the API listens beyond loopback.

const JSON_HEADER = { 'content-type': 'application/json' };

/** JSON text nesting arrays and objects `depth` levels deep (built as text: JSON.stringify recurses). */
function nested(depth: number): string {
  const open: string[] = [];
  const close: string[] = [];
  for (let i = 0; i < depth; i++) {
    open.push(i % 2 ? '{"a":' : '[');
    close.push(i % 2 ? '}' : ']');
  }
  return `${open.join('')}1${close.reverse().join('')}`;
}

t.test('bodyless requests with Content-Type: application/json', async (t) => {
  const h = await startTestBackhaul(t);
  const g = await graph(h, 'b');
  const bare = (method: string, path: string, headers: Record<string, string> = JSON_HEADER) => h.request(method, path, { headers, rawBody: '' });

  const test = await bare('POST', `/v1/connections/${g.src.id}/test`);
  t.equal(test.status, 200, `POST …/test: ${test.text}`);
  t.equal(test.body.ok, true);
  const suggest = await bare('POST', `/v1/syncs/${g.sync.id}/mappings/suggest`);
  t.equal(suggest.status, 200, `POST …/mappings/suggest: ${suggest.text}`);
  const run = await bare('POST', `/v1/syncs/${g.sync.id}/runs`);
  t.equal(run.status, 202, `POST …/runs: ${run.text}`);
  const cancel = await bare('POST', `/v1/runs/${run.body.id}/cancel`);
  t.equal(cancel.status, 200, `POST /v1/runs/{id}/cancel: ${cancel.text}`);
  const rotate = await bare('POST', '/v1/callback-secret', { ...JSON_HEADER, 'content-length': '0' });
  t.equal(rotate.status, 200, `POST /v1/callback-secret with Content-Length: 0: ${rotate.text}`);
  const del = await bare('DELETE', `/v1/syncs/${g.sync.id}`);
  t.equal(del.status, 204, `DELETE: ${del.text}`);
  const delMerge = await bare('DELETE', `/v1/models/${g.model.id}`, { 'content-type': 'application/merge-patch+json' });
  t.equal(delMerge.status, 204, `DELETE with merge-patch+json: ${delMerge.text}`);

  // A route that needs a body still says so, as a validation error (not malformed JSON).
  const create = await bare('POST', '/v1/connections');
  t.equal(create.status, 400);
  t.equal(create.headers.get('content-type'), PROBLEM_TYPE);
  t.equal(create.body.code, 'validation_failed');
  // Bytes that are not JSON still are malformed JSON.
  const junk = await h.request('POST', `/v1/connections/${g.src.id}/test`, { headers: JSON_HEADER, rawBody: '{' });
  t.equal(junk.body.code, 'malformed_json');
});

t.test('deeply nested JSON answers 400 body_too_deep (REST and GraphQL variables)', async (t) => {
  const h = await startTestBackhaul(t);
  for (const depth of [2_000, 100_000]) {
    const body = `{"slug":"deep","name":"Deep","type":"postgres","config":${nested(depth)}}`;
    const r = await h.request('POST', '/v1/connections', { headers: JSON_HEADER, rawBody: body });
    t.equal(r.status, 400, `REST, ${depth} levels`);
    t.equal(r.headers.get('content-type'), PROBLEM_TYPE);
    t.equal(r.body.code, 'body_too_deep');
    const patch = await h.request('PATCH', '/v1/connections/nope', { headers: { 'content-type': 'application/merge-patch+json' }, rawBody: body });
    t.equal(patch.body.code, 'body_too_deep', `merge-patch, ${depth} levels`);
    const gql = await h.request('POST', '/graphql', {
      headers: JSON_HEADER,
      rawBody: `{"query":${JSON.stringify('mutation($c: JSON) { createConnection(input: { slug: "d", name: "D", type: "postgres", config: $c }) { id } }')},"variables":{"c":${nested(depth)}}}`,
    });
    t.equal(gql.status, 400, `GraphQL variables, ${depth} levels`);
    t.equal(gql.body.errors?.[0]?.extensions?.code, 'body_too_deep');
  }
  // Idempotency keys hash the body: a deep body is refused before that too.
  const r = await h.request('POST', '/v1/connections', { headers: { ...JSON_HEADER, 'idempotency-key': 'deep' }, rawBody: nested(5_000) });
  t.equal(r.body.code, 'body_too_deep');
  // Ordinary nesting is fine.
  const fine = await h.request('POST', '/v1/connections', { body: { slug: 'ok', name: 'OK', type: 'postgres', config: { host: '127.0.0.1', port: 5432, database: 'postgres', user: 'postgres', extra: JSON.parse(nested(20)) } } });
  t.not(fine.body?.code, 'body_too_deep', '20 levels pass the depth check');
});

t.test('API docs are public and public routes carry no lock', async (t) => {
  const h = await startTestBackhaul(t);
  const docs = await fetch(`${h.url}/docs`, { redirect: 'follow' });
  t.equal(docs.status, 200, '/docs');
  t.match(await docs.text(), /swagger/i);
  for (const p of ['/docs/json', '/docs/static/index.html', '/docs/static/swagger-ui.css', '/docs/static/swagger-ui-bundle.js', '/docs/yaml']) {
    const r = await fetch(h.url + p);
    t.equal(r.status, 200, `${p} without a key`);
  }
  const doc = (await h.request('GET', '/openapi.json', { token: null })).body;
  for (const [path, method] of [
    ['/healthz', 'get'],
    ['/readyz', 'get'],
  ]) {
    t.same(doc.paths[path][method].security, [], `${method.toUpperCase()} ${path}: no security requirement (no lock in Swagger UI)`);
  }
  t.same(doc.security, [{ bearer: [] }], 'the rest keeps the bearer requirement');
  t.notOk(doc.paths['/v1/connections'].get.security, 'a protected route inherits it');
  // Every 401, wherever it comes from, is problem+json.
  for (const p of ['/v1/connections', '/v1/api-keys', '/docs-nope']) {
    const r = await h.request('GET', p, { token: null });
    if (r.status === 404) continue;
    t.equal(r.status, 401, p);
    t.equal(r.headers.get('content-type'), PROBLEM_TYPE, `${p}: problem+json`);
  }
});

t.test('CORS: preflights are cached and allow the tracing headers', async (t) => {
  const h = await startTestBackhaul(t, { env: { BACKHAUL_CORS_ORIGINS: 'https://app.example.com' } });
  for (const path of ['/v1/connections', '/graphql']) {
    const r = await fetch(h.url + path, {
      method: 'OPTIONS',
      headers: {
        origin: 'https://app.example.com',
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'authorization,content-type,traceparent,tracestate',
      },
    });
    t.equal(r.status, 204, `${path}: preflight`);
    t.equal(r.headers.get('access-control-allow-origin'), 'https://app.example.com');
    const allowed = (r.headers.get('access-control-allow-headers') ?? '').toLowerCase().split(/\s*,\s*/);
    for (const hdr of ['traceparent', 'tracestate', 'authorization', 'content-type']) t.ok(allowed.includes(hdr), `${path}: allows ${hdr}`);
    const maxAge = Number(r.headers.get('access-control-max-age'));
    t.ok(maxAge >= 600, `${path}: preflight cached for ${maxAge} s`);
  }
});

t.test('/metrics is not public by default beyond loopback', async (t) => {
  const h = await startTestBackhaul(t);
  // The same app as `serve` builds, configured to listen on every interface (we still bind it to
  // loopback here: the decision is taken from the configuration).
  const serve = async (h: TestBackhaul, env: Record<string, string | undefined>) => {
    const config = { ...h.bh.config, host: env.HOST ?? h.bh.config.host, metricsToken: env.BACKHAUL_METRICS_TOKEN, metricsPublic: env.BACKHAUL_METRICS_PUBLIC === 'true' ? true : env.BACKHAUL_METRICS_PUBLIC === 'false' ? false : undefined };
    const app = await buildApp({ config: config as never, services: h.bh.services, readiness: { checks: {} }, loggerInstance: pino({ level: 'silent' }) as never });
    const url = await app.listen({ host: '127.0.0.1', port: 0 });
    t.teardown(() => app.close());
    return (headers: Record<string, string> = {}) => fetch(`${url}/metrics`, { headers });
  };
  const wide = await serve(h, { HOST: '0.0.0.0' });
  const refused = await wide();
  t.equal(refused.status, 403, 'HOST=0.0.0.0, no token: refused');
  t.equal(refused.headers.get('content-type'), PROBLEM_TYPE);
  t.equal(((await refused.json()) as { code: string }).code, 'metrics_not_public');
  t.equal((await wide({ authorization: `Bearer ${h.token}` })).status, 403, 'an API key is not a metrics token');

  const token = await serve(h, { HOST: '0.0.0.0', BACKHAUL_METRICS_TOKEN: 'scrape-me-please' });
  t.equal((await token()).status, 401);
  t.equal((await token({ authorization: 'Bearer scrape-me-please' })).status, 200, 'with BACKHAUL_METRICS_TOKEN: the token opens it');

  const open = await serve(h, { HOST: '0.0.0.0', BACKHAUL_METRICS_PUBLIC: 'true' });
  t.equal((await open()).status, 200, 'BACKHAUL_METRICS_PUBLIC=true: public by choice');

  const loop = await serve(h, { HOST: '127.0.0.1' });
  t.equal((await loop()).status, 200, 'loopback: public by default');
  const closed = await serve(h, { HOST: '127.0.0.1', BACKHAUL_METRICS_PUBLIC: 'false' });
  t.equal((await closed()).status, 403, 'loopback with BACKHAUL_METRICS_PUBLIC=false: refused');
});

t.test(
  'Swagger UI renders offline in headless Chromium, without locks on public routes',
  { skip: CHROMIUM_PATH ? false : 'Chromium not found (/usr/bin/chromium; set CHROMIUM_PATH, or `apt-get install -y chromium`)', timeout: 240_000 },
  async (t) => {
    const h = await startTestBackhaul(t);
    const browser = await launchChromium(t);
    const page = await browser.newPage();
    await page.navigate(`${h.url}/docs`);
    await page.waitFor(`document.querySelectorAll('.opblock').length > 20`, 'the operations to render');
    // An operation with a security requirement shows a lock button; a public one does not.
    const locks = await page.evaluate<Record<string, boolean>>(`(() => {
      const out = {};
      for (const op of document.querySelectorAll('.opblock')) {
        const path = op.querySelector('.opblock-summary-path')?.getAttribute('data-path');
        const method = op.querySelector('.opblock-summary-method')?.textContent;
        out[method + ' ' + path] = Boolean(op.querySelector('.authorization__btn'));
      }
      return out;
    })()`);
    t.equal(locks['GET /healthz'], false, 'GET /healthz: no lock');
    t.equal(locks['GET /readyz'], false, 'GET /readyz: no lock');
    t.equal(locks['GET /v1/connections'], true, 'GET /v1/connections: a lock');
    const origin = new URL(h.url).origin;
    t.same(
      page.requests.filter((u) => !u.startsWith(origin) && !u.startsWith('data:')),
      [],
      'every request went to this server',
    );
  },
);
