import t from 'tap';
import fc from 'fast-check';
import { isDeepStrictEqual } from 'node:util';
import postgres from 'postgres';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { startFakeCrm } from '../fakes/crm.ts';
import { setupSync } from '../helpers/sync-setup.ts';

// A run's outcomes live in two places: run_batches (successes of a fresh plan, in bulk, one row
// per batch) and run_records (rejected and invalid rows, and every outcome of a plan rebuilt
// mid-run). GET /v1/runs/{id}/records and a row's history must read them as one list: every
// outcome once, with its fields, in (primary key, operation) order, paged by cursor, filtered by
// status, operation, primary key and redelivered. Checked against a list built here, for runs
// whose outcomes are spread over both tables at random.

const OPS = ['insert', 'update', 'delete'] as const;

interface Outcome {
  primaryKey: string;
  operation: 'insert' | 'update' | 'delete' | 'none';
  status: 'succeeded' | 'rejected' | 'invalid';
  error: { code: string; message: string } | null;
  attempts: number;
  batch: number | null;
  recordId: string | null;
  redelivered: boolean;
  /** Recorded in bulk (run_batches) or by row (run_records). */
  bulk: boolean;
}

// Keys of one width and lowercase operations: JavaScript's order and the database's collation agree.
const outcomeArb = fc
  .record({
    k: fc.integer({ min: 0, max: 60 }),
    op: fc.constantFrom(...OPS),
    kind: fc.constantFrom('bulk', 'bulk', 'bulk', 'succeeded', 'rejected', 'invalid'),
    batch: fc.integer({ min: 1, max: 6 }),
    attempts: fc.constantFrom(1, 1, 2, 5),
    recordId: fc.option(fc.stringMatching(/^[a-z0-9]{1,8}$/), { nil: null }),
    redelivered: fc.boolean(),
  })
  .map(({ k, op, kind, batch, attempts, recordId, redelivered }): Outcome => {
    const primaryKey = `k${String(k).padStart(3, '0')}`;
    if (kind === 'invalid') return { primaryKey, operation: 'none', status: 'invalid', error: { code: 'missing_match_value', message: 'm' }, attempts: 0, batch: null, recordId: null, redelivered: false, bulk: false };
    if (kind === 'rejected') return { primaryKey, operation: op, status: 'rejected', error: { code: 'bad_value', message: `no ${k}` }, attempts, batch, recordId: null, redelivered, bulk: false };
    return { primaryKey, operation: op, status: 'succeeded', error: null, attempts, batch, recordId, redelivered, bulk: kind === 'bulk' };
  });
const runArb = fc.uniqueArray(outcomeArb, { selector: (o) => `${o.primaryKey} ${o.operation}`, maxLength: 80 });
const queryArb = fc.record({
  limit: fc.integer({ min: 1, max: 30 }),
  status: fc.option(fc.constantFrom('succeeded', 'rejected', 'invalid'), { nil: undefined }),
  operation: fc.option(fc.constantFrom('insert', 'update', 'delete', 'none'), { nil: undefined }),
  primaryKey: fc.option(fc.integer({ min: 0, max: 60 }).map((k) => `k${String(k).padStart(3, '0')}`), { nil: undefined }),
  redelivered: fc.option(fc.boolean(), { nil: undefined }),
});

const cmp = (a: Outcome, b: Outcome) => (a.primaryKey < b.primaryKey ? -1 : a.primaryKey > b.primaryKey ? 1 : a.operation < b.operation ? -1 : a.operation > b.operation ? 1 : 0);
const view = ({ bulk: _bulk, ...o }: Outcome, runId: string) => ({ ...o, runId });

t.test("a run's records read from bulk and per-row outcomes alike, paged and filtered", async (t) => {
  const h = await startTestBackhaul(t);
  const crm = await startFakeCrm();
  t.teardown(() => crm.close());
  const { syncId } = await setupSync(t, h, crm.url);
  const db = postgres(h.databaseUrl, { max: 2, onnotice: () => {} });
  t.teardown(() => db.end());
  const [{ ws }] = await db<{ ws: string }[]>`select workspace_id as ws from syncs where id = ${syncId}`;

  const runs: { id: string; outcomes: Outcome[] }[] = [];
  let made = 0;
  const write = async (outcomes: Outcome[]) => {
    const id = `run_prop${String(made++).padStart(5, '0')}`;
    // One transaction: a write that fails leaves no run behind for the history to find.
    await db.begin(async (db) => {
      await db`insert into runs (id, workspace_id, sync_id, status, trigger, counts) values (${id}, ${ws}, ${syncId}, 'succeeded', 'api', '{}'::jsonb)`;
      for (const o of outcomes.filter((x) => !x.bulk)) {
        await db`
          insert into run_records (run_id, workspace_id, sync_id, primary_key, operation, status, error_code, error_message, attempts, batch, record_id, redelivered)
          values (${id}, ${ws}, ${syncId}, ${o.primaryKey}, ${o.operation}, ${o.status}, ${o.error?.code ?? null}, ${o.error?.message ?? null}, ${o.attempts}, ${o.batch}, ${o.recordId}, ${o.redelivered})`;
      }
      // Bulk rows as a checkpoint writes them: one per (batch, operation), arrays by position, an
      // array left null when it holds only defaults.
      const groups = Map.groupBy(
        outcomes.filter((x) => x.bulk),
        (o) => `${o.batch} ${o.operation}`,
      );
      for (const g of groups.values()) {
        const ids = g.map((o) => o.recordId);
        await db`
          insert into run_batches (run_id, batch, operation, workspace_id, sync_id, primary_keys, record_ids, attempts, redelivered)
          values (${id}, ${g[0].batch}, ${g[0].operation}, ${ws}, ${syncId}, ${g.map((o) => o.primaryKey)}::text[],
                  ${ids.some((i) => i !== null) ? db`${ids}::text[]` : null}, ${g.some((o) => o.attempts !== 1) ? db`${g.map((o) => o.attempts)}::int[]` : null},
                  ${g.some((o) => o.redelivered) ? db`string_to_array(${g.map((o) => (o.redelivered ? 't' : 'f')).join(',')}, ',')::boolean[]` : null})`;
      }
    });
    runs.push({ id, outcomes });
    return id;
  };
  const strip = (r: Record<string, unknown>) => {
    const { createdAt: _c, exchanges: _e, ...rest } = r;
    return rest;
  };

  await fc.assert(
    fc.asyncProperty(runArb, fc.array(queryArb, { minLength: 1, maxLength: 4 }), async (outcomes, queries) => {
      const runId = await write(outcomes);
      for (const q of queries) {
        const expected = outcomes
          .filter((o) => (q.status === undefined || o.status === q.status) && (q.operation === undefined || o.operation === q.operation))
          .filter((o) => (q.primaryKey === undefined || o.primaryKey === q.primaryKey) && (q.redelivered === undefined || o.redelivered === q.redelivered))
          .sort(cmp)
          .map((o) => view(o, runId));
        const got: Record<string, unknown>[] = [];
        let cursor: string | null = null;
        for (let page = 0; page < 200; page++) {
          const qs = new URLSearchParams({ limit: String(q.limit) });
          for (const k of ['status', 'operation', 'primaryKey', 'redelivered'] as const) if (q[k] !== undefined) qs.set(k, String(q[k]));
          if (cursor) qs.set('cursor', cursor);
          const res = await h.request('GET', `/v1/runs/${runId}/records?${qs}`);
          if (res.status !== 200) throw new Error(`${res.status} ${JSON.stringify(res.body)}`);
          if (res.body.data.length > q.limit) throw new Error('a page longer than its limit');
          got.push(...res.body.data.map(strip));
          cursor = res.body.nextCursor;
          if (!cursor) break;
        }
        t.same(got, expected, `run ${runId} ${JSON.stringify(q)}`);
        if (!isDeepStrictEqual(got, expected)) return false;
      }
      // A row's history across every run written so far, newest run first.
      const pk = outcomes[0]?.primaryKey ?? 'k000';
      const hist = runs
        .flatMap((r) => r.outcomes.filter((o) => o.primaryKey === pk).map((o) => view(o, r.id)))
        .sort((a, b) => (a.runId < b.runId ? 1 : a.runId > b.runId ? -1 : a.operation < b.operation ? 1 : a.operation > b.operation ? -1 : 0));
      const res = await h.request('GET', `/v1/syncs/${syncId}/records/${pk}?limit=200`);
      t.same(res.body.data.map(strip), hist, `history of ${pk}`);
      return isDeepStrictEqual(res.body.data.map(strip), hist);
    }),
    { numRuns: Number(process.env.PROPERTY_RUNS ?? 40) },
  );
});
