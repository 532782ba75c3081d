import t from 'tap';
import { createServer, type Server } from 'node:http';
import { ByteBudget, MAX_RESPONSE_BYTES, httpRequest, responseBudget, setResponseBudget } from '../../src/lib/http-client.ts';
import { HttpDestination } from '../../src/connectors/destinations/http.ts';
import { httpType } from '../../src/connectors/http-type.ts';
import { validateConnectorConfig } from '../../src/lib/validate.ts';
import { ConnectorError } from '../../src/errors.ts';

// Responses being read share one per-process byte budget: many large responses at once fail
// some requests (retryably) instead of taking the process's memory; no response is read past
// 10 MiB whatever a connection asks for.

const MiB = 1024 * 1024;

/**
 * A server whose responses start only once `barrier` requests have arrived, so they are all in
 * flight together; each body is `size` bytes, written in 64 KiB chunks.
 */
async function bigResponses(size: number, barrier: number): Promise<{ url: string; arrived: () => number; close: () => Promise<void> }> {
  const waiting: (() => void)[] = [];
  let arrived = 0;
  const server: Server = createServer((req, res) => {
    req.resume();
    arrived++;
    const go = () => {
      res.writeHead(200, { 'content-type': 'application/json' });
      const chunk = Buffer.alloc(64 * 1024, 'x');
      let sent = 0;
      const pump = () => {
        while (sent < size) {
          const n = Math.min(chunk.length, size - sent);
          sent += n;
          if (!res.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return void res.once('drain', pump);
        }
        res.end();
      };
      pump();
    };
    waiting.push(go);
    if (waiting.length >= barrier) waiting.splice(0).forEach((f) => f());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  return {
    url,
    arrived: () => arrived,
    close: () =>
      new Promise((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

t.test('concurrent large responses never hold more than the budget', async (t) => {
  const n = 12;
  const srv = await bigResponses(3 * MiB, n);
  t.teardown(() => srv.close());
  const budget = new ByteBudget(16 * MiB);
  const results = await Promise.allSettled(
    Array.from({ length: n }, () => httpRequest({ method: 'GET', url: srv.url, timeoutMs: 60_000, maxResponseBytes: 5 * MiB, denyPrivateNetworks: false, budget })),
  );
  const ok = results.filter((r) => r.status === 'fulfilled');
  const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
  t.ok(budget.peak <= budget.capacity, `peak ${budget.peak} ≤ ${budget.capacity}`);
  t.ok(ok.length >= 1, `${ok.length} responses read in full`);
  t.ok(failed.length >= 1, `${failed.length} refused: ${n} × 3 MiB do not fit in 16 MiB`);
  for (const f of failed) {
    t.ok(f.reason instanceof ConnectorError);
    t.equal(f.reason.code, 'response_budget_exceeded');
    t.equal(f.reason.classification, 'retryable', 'the request is retried later, the process goes on');
  }
  for (const r of ok) t.equal((r as PromiseFulfilledResult<{ body: Buffer }>).value.body.length, 3 * MiB);
  t.equal(budget.used, 0, 'every byte is given back once the requests settle');
});

t.test('the process-wide budget is shared by a destination\'s concurrent row requests', async (t) => {
  const n = 8;
  const srv = await bigResponses(3 * MiB, n);
  t.teardown(() => srv.close());
  const before = responseBudget;
  setResponseBudget(10 * MiB);
  t.teardown(() => setResponseBudget(before.capacity));
  const d = new HttpDestination(
    { baseUrl: srv.url, rowConcurrency: n, timeoutMs: 60_000, maxResponseBytes: 5 * MiB, objects: [{ name: 'c', fields: [], operations: { insert: { method: 'POST', path: '/c' } } }] },
    {},
    { denyPrivateNetworks: false },
  );
  const rows = Array.from({ length: n }, (_, i) => ({ primaryKey: String(i), payload: { i } }));
  const res = await d.write({ object: 'c', operation: 'insert', matchField: 'i', rows });
  const budget = responseBudget;
  t.equal(budget.capacity, 10 * MiB);
  t.ok(budget.peak <= 10 * MiB, `peak ${budget.peak} within the 10 MiB budget`);
  t.ok(res.results.some((r) => r.status === 'succeeded'), 'rows whose answer fitted succeeded');
  t.ok(res.results.some((r) => r.status === 'rejected' && r.retryable && r.code === 'response_budget_exceeded'), 'the others come back retryable');
  t.equal(budget.used, 0);
});

t.test('no response is read past 10 MiB, and the config ceiling is 10 MiB', async (t) => {
  const srv = await bigResponses(MAX_RESPONSE_BYTES + 64 * 1024, 1);
  t.teardown(() => srv.close());
  await t.rejects(httpRequest({ method: 'GET', url: srv.url, timeoutMs: 60_000, maxResponseBytes: 100 * MiB, denyPrivateNetworks: false, budget: new ByteBudget(64 * MiB) }), { code: 'response_too_large' });
  const cfg = (max: number) => ({ baseUrl: 'https://x.example', maxResponseBytes: max, objects: [{ name: 'c', fields: [], operations: { insert: { method: 'POST', path: '/c' } } }] });
  t.doesNotThrow(() => validateConnectorConfig(httpType.configSchema, cfg(10 * MiB)));
  t.throws(() => validateConnectorConfig(httpType.configSchema, cfg(10 * MiB + 1)), { code: 'validation_failed' });
});
