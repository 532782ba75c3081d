import t from 'tap';
import { startTestBackhaul } from './helpers/backhaul.ts';

t.test('server starts, bootstraps, and serves authenticated REST', async (t) => {
  const h = await startTestBackhaul(t);
  const health = await h.request('GET', '/healthz', { token: null });
  t.equal(health.status, 200);
  const ready = await h.request('GET', '/readyz', { token: null });
  t.same(ready.body, { status: 'ok', checks: { database: 'ok', migrations: 'ok' } });
  const anon = await h.request('GET', '/v1/connections', { token: null });
  t.equal(anon.status, 401);
  t.equal(anon.headers.get('content-type'), 'application/problem+json; charset=utf-8');
  t.equal(anon.body.code, 'unauthorized');
  const list = await h.request('GET', '/v1/connections');
  t.equal(list.status, 200);
  t.same(list.body, { data: [], nextCursor: null });
});
