import postgres from 'postgres';
import type { TestBackhaul, TestResponse } from './backhaul.ts';

// Shared bodies and helpers for the REST tests. Connections point at the real PostgreSQL on
// 127.0.0.1:5432 (trust auth), which also serves as the source of models.

export const PG_HOST = process.env.TEST_PG_HOST ?? '127.0.0.1';
export const PG_PORT = Number(process.env.TEST_PG_PORT ?? 5432);

export function pgConnection(slug: string, extra: Record<string, unknown> = {}) {
  return {
    slug,
    name: `PG ${slug}`,
    type: 'postgres',
    config: { host: PG_HOST, port: PG_PORT, database: 'postgres', user: 'postgres' },
    ...extra,
  };
}

export function httpConnection(slug: string, extra: Record<string, unknown> = {}) {
  return {
    slug,
    name: `HTTP ${slug}`,
    type: 'http',
    config: {
      baseUrl: 'http://127.0.0.1:9/api',
      objects: [
        {
          name: 'contacts',
          fields: [{ name: 'email', identifier: true }, { name: 'firstname' }, { name: 'lastname' }],
          operations: {
            insert: { method: 'POST', path: '/contacts' },
            update: { method: 'PATCH', path: '/contacts/{{email}}' },
            upsert: { method: 'PUT', path: '/contacts/{{email}}' },
            delete: { method: 'DELETE', path: '/contacts/{{email}}' },
          },
        },
      ],
    },
    ...extra,
  };
}

export const MODEL_SQL = "select 1 as id, 'a@example.com' as email, 'Ada' as first_name";

export function modelBody(slug: string, connectionId: string, extra: Record<string, unknown> = {}) {
  return { slug, name: `Model ${slug}`, connectionId, sql: MODEL_SQL, primaryKey: 'id', ...extra };
}

export function syncBody(slug: string, modelId: string, destinationId: string, extra: Record<string, unknown> = {}) {
  return {
    slug,
    name: `Sync ${slug}`,
    modelId,
    destinationId,
    object: 'contacts',
    mode: 'upsert',
    matchKey: { sourceColumn: 'email', destinationField: 'email' },
    ...extra,
  };
}

/** Fails loudly (with the body) when a setup request does not answer what the test needs. */
export async function ok(res: Promise<TestResponse>, status = 201): Promise<any> {
  const r = await res;
  if (r.status !== status) throw new Error(`expected ${status}, got ${r.status}: ${r.text}`);
  return r.body;
}

/** A connection, a model and a sync (+ their ids) in the token's workspace. */
export async function graph(h: TestBackhaul, prefix: string, token?: string) {
  const src = await ok(h.request('POST', '/v1/connections', { body: pgConnection(`${prefix}-src`), token }));
  const dst = await ok(h.request('POST', '/v1/connections', { body: httpConnection(`${prefix}-dst`), token }));
  const model = await ok(h.request('POST', '/v1/models?validate=false', { body: modelBody(`${prefix}-model`, src.id), token }));
  const sync = await ok(h.request('POST', '/v1/syncs', { body: syncBody(`${prefix}-sync`, model.id, dst.id), token }));
  return { src, dst, model, sync };
}

export function controlDb(h: TestBackhaul) {
  return postgres(h.databaseUrl, { max: 2, onnotice: () => {} });
}

export async function newWorkspace(h: TestBackhaul, slug: string): Promise<{ id: string; token: string }> {
  const r = await ok(h.request('POST', '/v1/workspaces', { body: { slug, name: slug } }));
  return { id: r.workspace.id, token: r.apiKey.token };
}

export async function newKey(h: TestBackhaul, scopes: string[], token?: string): Promise<{ id: string; token: string }> {
  const r = await ok(h.request('POST', '/v1/api-keys', { body: { name: `k-${scopes.join('-')}`, scopes }, token }));
  return { id: r.id, token: r.token };
}

export const PROBLEM_TYPE = 'application/problem+json; charset=utf-8';
