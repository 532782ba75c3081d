import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import t from 'tap';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { graph, ok } from '../helpers/http-fixtures.ts';
import { env } from './helpers.ts';

// API fuzzing from the committed OpenAPI document: CHAOS_FUZZ_RUNS generated requests over every
// operation, with path ids that exist and ones that do not, query strings and bodies built from
// the schemas and plain garbage (wrong types, random JSON, invalid JSON, wrong content types).
// Every answer must be a status the operation documents, every 4xx a problem+json, never a
// 5xx; afterwards the server is still healthy.

const RUNS = env('CHAOS_FUZZ_RUNS', 3000);
const spec = JSON.parse(readFileSync(new URL('../../openapi/openapi.json', import.meta.url), 'utf8'));

type Schema = Record<string, any>;
const resolve = (s: Schema | undefined): Schema => {
  let x = s ?? {};
  for (let i = 0; x.$ref && i < 10; i++) x = x.$ref.split('/').slice(1).reduce((o: any, k: string) => o[k], spec);
  return x;
};

/** An arbitrary of values that (mostly) fit a JSON schema, with some that do not. */
function fromSchema(s0: Schema | undefined, depth = 0): fc.Arbitrary<unknown> {
  const s = resolve(s0);
  if (depth > 4) return fc.constant(null);
  if (s.const !== undefined) return fc.constant(s.const);
  if (Array.isArray(s.enum)) return fc.constantFrom(...s.enum);
  const alts = s.anyOf ?? s.oneOf;
  if (Array.isArray(alts) && alts.length) return fc.oneof(...alts.map((a: Schema) => fromSchema(a, depth + 1)));
  const type = Array.isArray(s.type) ? s.type[0] : s.type;
  switch (type) {
    case 'string':
      return fc.oneof(
        fc.string({ minLength: s.minLength ?? 0, maxLength: Math.min(s.maxLength ?? 30, 30) }),
        fc.constantFrom('customers', 'a@example.com', 'select 1 as id', 'http://127.0.0.1:9/x', '2024-01-01T00:00:00Z', 'id', 'email'),
      );
    case 'integer':
      return fc.integer({ min: s.minimum ?? -10, max: Math.min(s.maximum ?? 1000, 1_000_000) });
    case 'number':
      return fc.double({ noNaN: true, min: -1e6, max: 1e6 });
    case 'boolean':
      return fc.boolean();
    case 'array':
      return fc.array(fromSchema(s.items, depth + 1), { maxLength: 3 });
    case 'object':
    case undefined: {
      const props = (s.properties ?? {}) as Record<string, Schema>;
      const keys = Object.keys(props);
      if (!keys.length) return fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 3 });
      const rec: Record<string, fc.Arbitrary<unknown>> = {};
      for (const k of keys) rec[k] = fromSchema(props[k], depth + 1);
      return fc.record(rec, { requiredKeys: (s.required ?? []).filter((k: string) => keys.includes(k)) });
    }
    default:
      return fc.jsonValue({ maxDepth: 2 });
  }
}

interface Op {
  method: string;
  path: string;
  params: { in: string; name: string; schema?: Schema }[];
  body?: Schema;
  statuses: string[];
}
const ops: Op[] = [];
for (const [path, methods] of Object.entries(spec.paths as Record<string, Record<string, any>>)) {
  for (const [method, op] of Object.entries(methods)) {
    if (!op?.responses) continue;
    ops.push({
      method: method.toUpperCase(),
      path,
      params: (op.parameters ?? []).map((p: any) => resolve(p)),
      body: op.requestBody?.content?.['application/json']?.schema,
      statuses: Object.keys(op.responses),
    });
  }
}

const documented = (op: Op | undefined, status: number) => {
  if (!op) return status === 404 || status === 405 || status === 401;
  return op.statuses.includes(String(status)) || op.statuses.includes(`${String(status)[0]}XX`) || op.statuses.includes('default');
};

t.test(`${RUNS} generated requests over ${ops.length} operations`, async (t) => {
  const h = await startTestBackhaul(t);
  const g = await graph(h, 'fz');
  const mappings = await ok(h.request('PUT', `/v1/syncs/${g.sync.id}/mappings`, { body: [{ destinationField: 'email', source: { column: 'email' } }] }), 200);
  const run = await ok(h.request('POST', `/v1/syncs/${g.sync.id}/runs`, { body: {} }), 202);
  const other = await ok(h.request('POST', '/v1/api-keys', { body: { name: 'fuzz victim', scopes: ['read'] } }));
  const ids = [g.src.id, g.dst.id, g.model.id, g.sync.id, g.src.slug, g.sync.slug, (Array.isArray(mappings) ? mappings : mappings.data)?.[0]?.id, run.id, other.id, 'contacts', '1'].filter(Boolean);
  const idArb = fc.oneof(
    fc.constantFrom(...ids),
    fc.string({ maxLength: 40 }),
    fc.constantFrom('sync_0000000000000000000000', '%00', '..', '%2e%2e%2f', 'null', 'x'.repeat(300), "'; drop table runs;--"),
  );
  const garbageBody = fc.oneof(
    fc.jsonValue({ maxDepth: 3 }).map((v) => ({ raw: JSON.stringify(v), type: 'application/json' })),
    fc.string({ maxLength: 50 }).map((s) => ({ raw: s, type: 'application/json' })),
    fc.constantFrom('{"a":', '[', '{"__proto__":{"x":1}}', '\u0000', 'null', '1e999').map((s) => ({ raw: s, type: 'application/json' })),
    fc.string({ maxLength: 50 }).map((s) => ({ raw: s, type: 'text/plain' })),
  );

  const requestArb = fc.constantFrom(...ops).chain((op) =>
    fc.record({
      op: fc.constant(op),
      method: fc.oneof({ weight: 9, arbitrary: fc.constant(op.method) }, { weight: 1, arbitrary: fc.constantFrom('GET', 'POST', 'PUT', 'PATCH', 'DELETE') }),
      pathValues: fc.array(idArb, { minLength: 4, maxLength: 4 }),
      query: fc.record(
        Object.fromEntries(
          op.params.filter((p) => p.in === 'query').map((p) => [p.name, fc.oneof(fromSchema(p.schema).map(String), fc.string({ maxLength: 20 }))]),
        ) as Record<string, fc.Arbitrary<string>>,
        { requiredKeys: [] },
      ),
      extraQuery: fc.option(fc.tuple(fc.string({ maxLength: 8 }), fc.string({ maxLength: 8 }))),
      body: op.body
        ? fc.oneof(
            { weight: 3, arbitrary: fromSchema(op.body).map((v) => ({ raw: JSON.stringify(v), type: 'application/json' })) },
            { weight: 2, arbitrary: garbageBody },
          )
        : fc.option(garbageBody, { freq: 5 }),
      ifMatch: fc.option(fc.oneof(fc.constant('"1"'), fc.string({ maxLength: 10 })), { freq: 4 }),
      idempotencyKey: fc.option(fc.string({ minLength: 0, maxLength: 300 }), { freq: 4 }),
    }),
  );

  let sent = 0;
  const byStatus = new Map<number, number>();
  await fc.assert(
    fc.asyncProperty(requestArb, async (r) => {
      let i = 0;
      const path = r.op.path.replace(/\{[^}]+\}/g, () => encodeURIComponent(String(r.pathValues[i++])));
      const qs = new URLSearchParams(Object.entries(r.query).filter((e): e is [string, string] => e[1] !== undefined));
      if (r.extraQuery) qs.append(r.extraQuery[0], r.extraQuery[1]);
      const url = `${path}${qs.size ? `?${qs}` : ''}`;
      const headers: Record<string, string> = {};
      if (r.body) headers['content-type'] = r.body.type;
      if (r.ifMatch) headers['if-match'] = r.ifMatch;
      if (r.idempotencyKey) headers['idempotency-key'] = r.idempotencyKey.replace(/[^\x21-\x7e]/g, 'x');
      const withBody = r.body && r.method !== 'GET' && r.method !== 'DELETE';
      const res = await h.request(r.method, url, { rawBody: withBody ? r.body!.raw : undefined, headers });
      sent++;
      byStatus.set(res.status, (byStatus.get(res.status) ?? 0) + 1);
      const op = ops.find((o) => o.method === r.method && o.path === r.op.path);
      const what = `${r.method} ${url} ${withBody ? r.body!.raw.slice(0, 200) : ''} → ${res.status} ${res.text.slice(0, 300)}`;
      if (res.status >= 500) throw new Error(`server error: ${what}`);
      if (op && !documented(op, res.status)) throw new Error(`undocumented status: ${what}`);
      if (res.status >= 400 && !String(res.headers.get('content-type')).startsWith('application/problem+json')) throw new Error(`4xx without problem+json: ${what}`);
    }),
    { numRuns: RUNS, seed: env('CHAOS_SEED', Date.now() % 100_000) },
  );
  t.equal(sent, RUNS, `${RUNS} requests sent; statuses ${JSON.stringify(Object.fromEntries([...byStatus].sort((a, b) => a[0] - b[0])))}`);
  t.equal((await h.request('GET', '/healthz', { token: null })).status, 200, 'healthz still answers');
  t.equal((await h.request('GET', '/readyz', { token: null })).status, 200, 'readyz still answers');
  t.equal((await h.request('GET', '/v1/syncs?limit=5')).status, 200, 'and real requests still work');
});
