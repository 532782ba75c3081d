import postgres from 'postgres';
import type { TestBackhaul } from './backhaul.ts';
import { crmConnectionConfig, type CrmOptions } from '../fakes/crm.ts';

// Builds a PostgreSQL → CRM sync through the public REST API, over a source table `src.people`
// created in the test's own database.

export interface SyncFixture {
  src: postgres.Sql;
  syncId: string;
  destinationId: string;
}

export async function seedPeople(src: postgres.Sql, n: number, from = 1): Promise<void> {
  await src`
    insert into src.people (id, email, name, age)
    select i, 'user' || i || '@example.com', 'User ' || i, 20 + (i % 50) from generate_series(${from}::int, ${from + n - 1}::int) i`;
}

export async function setupSync(
  t: { teardown(fn: () => unknown): void },
  h: TestBackhaul,
  crmUrl: string,
  opts: { rows?: number; mode?: string; delivery?: Record<string, unknown>; slug?: string; crm?: CrmOptions; changeThresholds?: Record<string, unknown> } = {},
): Promise<SyncFixture> {
  const src = postgres(h.databaseUrl, { max: 2, onnotice: () => {} });
  t.teardown(() => src.end());
  await src`create schema if not exists src`;
  await src`create table if not exists src.people (id int primary key, email text, name text, age int)`;
  if (opts.rows) await seedPeople(src, opts.rows);
  const u = new URL(h.databaseUrl);
  const slug = opts.slug ?? 'people';
  const ok = (r: { status: number; body: any }, what: string) => {
    if (r.status >= 300) throw new Error(`${what}: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  };
  const source = ok(
    await h.request('PUT', `/v1/connections/${slug}-db`, {
      body: { name: 'Warehouse', type: 'postgres', config: { host: u.hostname, port: Number(u.port), database: u.pathname.slice(1), user: decodeURIComponent(u.username) }, secrets: { password: decodeURIComponent(u.password) } },
    }),
    'source connection',
  );
  const dest = ok(await h.request('PUT', `/v1/connections/${slug}-crm`, { body: { name: 'CRM', type: 'http', config: crmConnectionConfig(crmUrl, opts.crm) } }), 'destination');
  const model = ok(
    await h.request('PUT', `/v1/models/${slug}`, { body: { name: 'People', connectionId: source.id, sql: 'select id, email, name, age from src.people', primaryKey: 'id' } }),
    'model',
  );
  const sync = ok(
    await h.request('PUT', `/v1/syncs/${slug}`, {
      body: {
        name: 'People to CRM',
        modelId: model.id,
        destinationId: dest.id,
        object: 'contacts',
        mode: opts.mode ?? 'upsert',
        matchKey: { sourceColumn: 'email', destinationField: 'email' },
        delivery: { batchSize: 50, concurrency: 4, maxRetries: 10, ...opts.delivery },
        ...(opts.changeThresholds ? { changeThresholds: opts.changeThresholds } : {}),
      },
    }),
    'sync',
  );
  ok(
    await h.request('PUT', `/v1/syncs/${sync.id}/mappings`, {
      body: [
        { destinationField: 'email', source: { column: 'email' } },
        { destinationField: 'name', source: { column: 'name' } },
        { destinationField: 'age', source: { column: 'age' } },
      ],
    }),
    'mappings',
  );
  return { src, syncId: sync.id, destinationId: dest.id };
}

/** Triggers a run and waits for it to reach a terminal status. */
export async function runToEnd(h: TestBackhaul, syncId: string, body: Record<string, unknown> = {}, timeoutMs = 60_000): Promise<any> {
  const trig = await h.request('POST', `/v1/syncs/${syncId}/runs`, { body });
  if (trig.status !== 202) throw new Error(`trigger: ${trig.status} ${JSON.stringify(trig.body)}`);
  return waitForRun(h, trig.body.id, timeoutMs);
}

export async function waitForRun(h: TestBackhaul, runId: string, timeoutMs = 60_000, until: (run: any) => boolean = (r) => ['succeeded', 'partially_succeeded', 'failed', 'cancelled'].includes(r.status)): Promise<any> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await h.request('GET', `/v1/runs/${runId}`);
    if (until(r.body)) return r.body;
    if (Date.now() > deadline) throw new Error(`run ${runId} did not finish: ${JSON.stringify(r.body)}`);
    await new Promise((res) => setTimeout(res, 50));
  }
}

/**
 * Waits until the control database holds no job of `tasks` that is queued, due later or running
 * (jobs that used up their attempts aside). A run's job completes only after its finish hooks ran,
 * and alerts and webhook deliveries are jobs themselves, so this is the event that ends a run's
 * after-effects: tests assert that something did NOT happen after it, never after a fixed sleep.
 * Throws after `timeoutMs` naming the jobs still there.
 */
export async function waitForJobsDone(h: TestBackhaul, tasks: string[] = ['backhaul_run', 'backhaul_alert', 'backhaul_webhook'], timeoutMs = 60_000): Promise<void> {
  const db = postgres(h.databaseUrl, { max: 1, onnotice: () => {} });
  try {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const left = await db<{ task_identifier: string; key: string | null; run_at: Date }[]>`
        select task_identifier, key, run_at from graphile_worker.jobs
        where task_identifier = any(${tasks}) and attempts < max_attempts`;
      if (left.length === 0) return;
      if (Date.now() > deadline) throw new Error(`jobs still pending after ${timeoutMs} ms: ${JSON.stringify(left)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  } finally {
    await db.end();
  }
}
