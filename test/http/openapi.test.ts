import t from 'tap';
import { readFileSync } from 'node:fs';
import { Validator } from '@seriousme/openapi-schema-validator';
import { startTestBackhaul } from '../helpers/backhaul.ts';

// GET /openapi.json is a valid OpenAPI 3.1 document, and the committed copy is what is served.

t.test('openapi', async (t) => {
  const h = await startTestBackhaul(t);
  const r = await h.request('GET', '/openapi.json', { token: null });
  t.equal(r.status, 200);
  t.match(r.headers.get('content-type'), /^application\/json/);
  const doc = r.body;
  t.equal(doc.openapi, '3.1.0');

  const validator = new Validator();
  const res = await validator.validate(structuredClone(doc));
  t.same(res.errors ?? [], [], 'no schema errors');
  t.equal(res.valid, true, 'valid per the OpenAPI 3.1 JSON Schema');
  t.equal(validator.version, '3.1');
  const broken = structuredClone(doc);
  delete broken.info;
  broken.paths['/v1/connections'].get.responses = 'none';
  t.equal((await new Validator().validate(broken)).valid, false, 'the validator does reject a broken document');

  // Every $ref resolves within the document.
  const refs = new Set<string>();
  const walk = (v: unknown) => {
    if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === 'object') {
      for (const [k, x] of Object.entries(v)) {
        if (k === '$ref' && typeof x === 'string') refs.add(x);
        else walk(x);
      }
    }
  };
  walk(doc);
  t.ok(refs.size > 0);
  for (const ref of refs) {
    t.match(ref, /^#\//, `${ref} is local`);
    const target = ref
      .slice(2)
      .split('/')
      .reduce<any>((o, k) => o?.[k.replace(/~1/g, '/').replace(/~0/g, '~')], doc);
    t.ok(target, `${ref} resolves`);
  }

  // The surface this issue delivers is documented.
  for (const [path, methods] of Object.entries({
    '/v1/workspaces': ['get', 'post'],
    '/v1/api-keys': ['get', 'post'],
    '/v1/api-keys/{id}': ['delete'],
    '/v1/connectors': ['get'],
    '/v1/connections': ['get', 'post'],
    '/v1/connections/{ref}': ['get', 'patch', 'put', 'delete'],
    '/v1/models': ['get', 'post'],
    '/v1/models/{ref}': ['get', 'patch', 'put', 'delete'],
    '/v1/syncs': ['get', 'post'],
    '/v1/syncs/{ref}': ['get', 'patch', 'put', 'delete'],
    '/v1/syncs/{ref}/mappings': ['get', 'post', 'put'],
    '/v1/syncs/{ref}/mappings/{id}': ['get', 'patch', 'put', 'delete'],
    '/v1/audit-events': ['get'],
  })) {
    t.ok(doc.paths[path], `${path} documented`);
    for (const m of methods) t.ok(doc.paths[path]?.[m], `${m.toUpperCase()} ${path}`);
  }
  t.ok(doc.components.schemas.Problem, 'Problem schema published');
  t.ok(doc.components.securitySchemes.bearer);
  t.notOk(doc.paths['/openapi.json'], 'the document itself is hidden');

  const committed = JSON.parse(readFileSync(new URL('../../openapi/openapi.json', import.meta.url), 'utf8'));
  t.same(committed, doc, 'openapi/openapi.json equals what the server serves (run `node scripts/generate.ts`)');
});
