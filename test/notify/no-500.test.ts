import t from 'tap';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { paths, setAt } from '../helpers/mutate.ts';

// Whatever is sent to the webhook, callback-secret and alert-channel routes, the answer is a
// 4xx problem (or a success), never a 500.

const VALUES: unknown[] = [null, 0, -1, 1.5, true, '', ' ', 'a\u0000b', '\ud800', '💥 ☃ \u202e', 'http://[zz]/', 'http://169.254.169.254/', 'whsec_', 'x'.repeat(100_000), [], [1, null], {}, { a: { b: [null] } }];

t.test('no 500 on the notify routes', async (t) => {
  const h = await startTestBackhaul(t);
  const failures: string[] = [];
  let sent = 0;
  const send = async (method: string, path: string, body: unknown) => {
    sent++;
    const r = await h.request(method, path, { body });
    if (r.status >= 500) failures.push(`${method} ${path} ${JSON.stringify(body).slice(0, 200)} → ${r.status} ${r.text.slice(0, 200)}`);
    else if (r.status >= 400 && !(r.headers.get('content-type') ?? '').includes('problem+json')) failures.push(`${method} ${path}: ${r.status} not problem+json`);
  };
  const ep = { slug: 'e1', name: 'E', url: 'http://127.0.0.1:9/x', events: ['run.completed'], syncIds: [], enabled: true, description: 'd', secret: `whsec_${Buffer.alloc(32, 1).toString('base64')}` };
  const ch = { slug: 'c1', name: 'C', type: 'pagerduty', config: { eventsUrl: 'http://127.0.0.1:9/v2/enqueue', severity: 'error' }, secrets: { routingKey: 'k' } };
  await h.request('POST', '/v1/webhook-endpoints', { body: ep });
  await h.request('POST', '/v1/alert-channels', { body: ch });
  const rot = { secret: ep.secret, gracePeriodSeconds: 10 };
  const cases: [string, string, unknown][] = [
    ['POST', '/v1/webhook-endpoints', { ...ep, slug: 'e2' }],
    ['PATCH', '/v1/webhook-endpoints/e1', ep],
    ['PUT', '/v1/webhook-endpoints/e1', ep],
    ['PUT', '/v1/webhook-endpoints/e3', { ...ep, slug: undefined }],
    ['POST', '/v1/webhook-endpoints/e1/rotate-secret', rot],
    ['POST', '/v1/callback-secret', rot],
    ['POST', '/v1/alert-channels', { ...ch, slug: 'c2' }],
    ['PATCH', '/v1/alert-channels/c1', ch],
    ['PUT', '/v1/alert-channels/c1', ch],
  ];
  for (const [method, path, body] of cases) {
    for (const p of paths(body)) for (const v of VALUES) await send(method, path, setAt(body, p, v));
    for (const v of VALUES) await send(method, path, v);
  }
  for (const path of ['/v1/webhook-endpoints/%00/deliveries', '/v1/webhook-endpoints/e1/deliveries?status=nope', '/v1/webhook-endpoints/e1/deliveries?limit=0', '/v1/webhook-endpoints/e1/deliveries?cursor=zz', '/v1/runs/x/deliveries', '/v1/alerts?status=x', '/v1/alerts?cursor=%ff']) {
    await send('GET', path, undefined);
  }
  await send('POST', '/v1/webhook-endpoints/e1/deliveries/%00/redeliver', undefined);
  await send('POST', '/v1/alert-channels/nope/test', undefined);
  t.same(failures, [], `${sent} requests`);
});
