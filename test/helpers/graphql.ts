import pino from 'pino';
import { connectDatabase, type Database } from '../../src/db/client.ts';
import { createServices, type Services } from '../../src/domain/services.ts';
import { registerGraphql } from '../../src/graphql/index.ts';
import type { GraphqlLimits } from '../../src/graphql/limits.ts';
import { buildApp } from '../../src/http/app.ts';
import { startTestBackhaul, type TestBackhaul } from './backhaul.ts';

// A real Backhaul (fresh database, owner token) plus a second API instance on the same database
// with the GraphQL plugin registered through AppOptions.plugins, exactly as server.ts wires it.
// The second instance has its own connection pool, optionally counting every SQL statement.

interface Teardown {
  teardown(fn: () => unknown): void;
}

export const PG_HOST = process.env.TEST_PG_HOST ?? '127.0.0.1';
export const PG_PORT = Number(process.env.TEST_PG_PORT ?? 5432);

export interface GqlResponse {
  status: number;
  headers: Headers;
  body: any;
}

export interface GraphqlHarness {
  h: TestBackhaul;
  url: string;
  services: Services;
  database: Database;
  /** SQL statements sent by this instance's pool since the last reset. */
  statements: string[];
  gql(query: string, variables?: Record<string, unknown>, opts?: { token?: string | null; headers?: Record<string, string> }): Promise<GqlResponse>;
  /** Like gql, but fails on any error and returns `data`. */
  data(query: string, variables?: Record<string, unknown>, token?: string): Promise<any>;
}

export async function startGraphql(t: Teardown, opts: { production?: boolean; limits?: Partial<GraphqlLimits> } = {}): Promise<GraphqlHarness> {
  const h = await startTestBackhaul(t);
  const statements: string[] = [];
  const database = connectDatabase(h.databaseUrl, { debug: (q) => statements.push(q) });
  const services = createServices({ ...h.bh.services.deps, database });
  services.mappings.checkSource = h.bh.services.mappings.checkSource;
  const app = await buildApp({
    config: h.bh.config,
    services,
    readiness: { checks: {} },
    loggerInstance: pino({ level: 'silent' }) as never,
    plugins: [(app) => registerGraphql(app, services, { production: opts.production ?? false, database, limits: opts.limits })],
  });
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  t.teardown(async () => {
    await app.close();
    await database.close();
  });

  const gql: GraphqlHarness['gql'] = async (query, variables, o = {}) => {
    const headers: Record<string, string> = { 'content-type': 'application/json', ...(o.headers ?? {}) };
    const tok = o.token === undefined ? h.token : o.token;
    if (tok) headers.authorization = `Bearer ${tok}`;
    const res = await fetch(`${url}/graphql`, { method: 'POST', headers, body: JSON.stringify({ query, variables }) });
    const text = await res.text();
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch {
      // not JSON
    }
    return { status: res.status, headers: res.headers, body };
  };
  return {
    h,
    url,
    services,
    database,
    statements,
    gql,
    async data(query, variables, token) {
      const r = await gql(query, variables, { token });
      if (r.status !== 200 || r.body?.errors) throw new Error(`GraphQL failed (${r.status}): ${JSON.stringify(r.body)}`);
      return r.body.data;
    },
  };
}

export function pgConnectionInput(slug: string) {
  return { slug, name: `PG ${slug}`, type: 'postgres', config: { host: PG_HOST, port: PG_PORT, database: 'postgres', user: 'postgres' }, secrets: { password: 'not-used' } };
}

export function httpConnectionInput(slug: string) {
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
          operations: { upsert: { method: 'POST', path: '/contacts' } },
        },
      ],
    },
  };
}

/** A query on a real table of the source database. */
export const MODEL_SQL = "select oid::int as id, datname || '@example.com' as email, datname as first_name from pg_database";
