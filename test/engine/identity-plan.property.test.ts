import fc from 'fast-check';
import pino from 'pino';
import t from 'tap';
import type { MappingSpec } from '../../src/connectors/mapping.ts';
import { connectDatabase } from '../../src/db/client.ts';
import { syncView, type ChangeThresholdsT, type SyncModeT, type SyncViewT } from '../../src/domain/syncs.ts';
import { deliverPhase } from '../../src/engine/deliver.ts';
import { buildPlan, markDuplicates, snapshotSize } from '../../src/engine/diff.ts';
import { checkThresholds } from '../../src/engine/guards.ts';
import { queryPhase } from '../../src/engine/query.ts';
import { realClock } from '../../src/engine/rate-limiter.ts';
import { recordInvalid } from '../../src/engine/records.ts';
import { dropRunTables, STAGING_SCHEMA, stagingNames } from '../../src/engine/staging.ts';
import { emptyCounts, type OpCounts } from '../../src/engine/status.ts';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { destKey, MemoryDestination, memorySource, NO_FAULTS, type DestFaults, type Equality, type PersonRow } from '../helpers/memory-connectors.ts';
import { setupSync } from '../helpers/sync-setup.ts';

// Destination identity as a property, at volume (issue 12). Thousands of random sequences of
// model states — rows added, removed, re-keyed under a new primary key with the same match
// value, match values moving, case and whitespace variants, blank values, two rows claiming one
// record, emptied models — under modes upsert/update/mirror, change thresholds, allowDeletions,
// full resyncs and destination faults (refused rows, retried failures before and after applying,
// a destination that goes down part-way).
//
// Each run goes through the engine's own phases against real PostgreSQL: queryPhase (mapping,
// match keys, staging COPY), markDuplicates + buildPlan (the set-based diff), checkThresholds,
// and deliverPhase (batches, concurrency, the delete barrier, checkpoints into the snapshot) —
// with an in-memory source and CRM-like destination (test/helpers/memory-connectors.ts) instead
// of a source database and HTTP, which is what makes thousands of sequences affordable. What a
// run costs is mostly PostgreSQL creating and dropping its per-run tables, so a generated case
// carries 8 sequences side by side in one sync — each the history of its own group of rows
// (primary keys g1…g7, emails @g<g>.example.com), as a real model carries many rows — and each
// of its runs serves a step of all of them; triggers, faults and a collapse of the whole model
// (0 rows) are per run. The
// end-to-end property (identity.property.test.ts) proves the same through the worker and HTTP.
//
// The oracle below is the README's table of what each mode may create, update and delete,
// applied to a plain model of the destination and of the snapshot (what Backhaul wrote and the
// destination acknowledged). It never looks at the engine's SQL. After every run:
//   - the plan is the one the rules give: each write and delete, with its row and record;
//   - a delete only addresses a record Backhaul wrote that no current row claims, and never
//     starts before every write of the run was answered (checked by the destination itself);
//   - two rows claiming a record are both invalid, each naming the other;
//   - change thresholds trip exactly when the plan exceeds them, and a model emptied against a
//     non-empty snapshot cannot delete it without allowDeletions;
//   - the destination and the snapshot hold what the acknowledged operations say;
// and once a step's model has settled, the destination is what the mode's rules say for it,
// and a run of the unchanged model sends nothing it sent before.
//
// PROPERTY_RUNS sets the number of sequences (default 1000), PROPERTY_LANES how many run side by
// side (each on its own sync and connections; default 6: the runs mostly wait on PostgreSQL's
// table creation), PROPERTY_SEED the first lane's seed (lane i uses
// seed + i; a failure prints its lane's seed and path: replay with PROPERTY_LANES=1
// PROPERTY_SEED=<seed> PROPERTY_PATH=<path>, and PROPERTY_SHRINK=1 to shrink it).

const RUNS = Number(process.env.PROPERTY_RUNS ?? 1000);

const LANES = Math.max(1, Number(process.env.PROPERTY_LANES ?? 6));
const SEED = process.env.PROPERTY_SEED !== undefined ? Number(process.env.PROPERTY_SEED) : Date.now() ^ (Math.random() * 2 ** 31);
const PATH = process.env.PROPERTY_PATH;
// Shrinking a failing case re-runs it hundreds of times: only on request (PROPERTY_SHRINK=1).
const SHRINK = process.env.PROPERTY_SHRINK === '1';

// ---- Generated inputs -----------------------------------------------------------------------

const LOCALS = ['ada', 'alan', 'grace', 'edsger', 'barbara'];
/**
 * Spellings of one email of group g: as is, upper/mixed case, surrounded by spaces (one record
 * for a case-insensitive destination, four for an exact one); one index past LOCALS is blank.
 */
function spelling(g: number, e: number, v: number): string | null {
  if (e >= LOCALS.length) return [null, '', '   '][v % 3];
  const l = LOCALS[e];
  return [`${l}@g${g}.example.com`, `${l.toUpperCase()}@G${g}.Example.COM`, ` ${l}@g${g}.example.com `, `${l[0].toUpperCase()}${l.slice(1)}@g${g}.EXAMPLE.com`][v % 4];
}
const localOf = (email: string | null | undefined): number => LOCALS.indexOf(email?.trim().toLowerCase().split('@')[0] ?? '');

type Op =
  | { k: 'insert'; pk: number; e: number; v: number }
  | { k: 'delete'; pk: number }
  | { k: 'rekey'; pk: number; to: number }
  | { k: 'move'; pk: number; e: number; v: number }
  | { k: 'respell'; pk: number; v: number }
  | { k: 'claim'; pk: number; from: number; v: number }
  | { k: 'rename'; pk: number }
  | { k: 'empty' };

/** One sequence: the history of one group of rows (primary keys g1..g7, emails @g<g>…). */
interface History {
  /** Records someone else made in the destination before the first run. */
  foreign: { e: number; v: number }[];
  steps: { ops: Op[]; foreign: { e: number; v: number } | null }[];
}
interface Trigger {
  allowDeletions: boolean;
  fullResync: boolean;
}
/**
 * One step's run: its trigger and destination faults; `collapse`: the model returns 0 rows (every
 * group emptied); `settle`: run the unchanged model again until nothing is left to do (without
 * it, what a failed run left undone meets the next step's changes).
 */
interface RunSpec {
  trigger: Trigger;
  faults: DestFaults;
  collapse: boolean;
  settle: boolean;
}
/** Histories side by side in one sync, and what each step's run is given. */
interface Case {
  mode: SyncModeT;
  equality: Equality;
  batchSize: number;
  concurrency: number;
  thresholds: ChangeThresholdsT;
  histories: History[];
  runs: RunSpec[];
}

const GROUPS = 8;
const CASES = Math.max(1, Math.ceil(RUNS / GROUPS));
const STEPS = 5;
const pkArb = fc.integer({ min: 1, max: 7 });
// One index past LOCALS draws a blank value.
const eArb = fc.oneof({ weight: 9, arbitrary: fc.nat(LOCALS.length - 1) }, { weight: 1, arbitrary: fc.constant(LOCALS.length) });
const emailArb = fc.record({ e: eArb, v: fc.nat(3) });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ k: fc.constant('insert' as const), pk: pkArb, e: eArb, v: fc.nat(3) }) },
  { weight: 3, arbitrary: fc.record({ k: fc.constant('delete' as const), pk: pkArb }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('rekey' as const), pk: pkArb, to: pkArb }) },
  { weight: 3, arbitrary: fc.record({ k: fc.constant('move' as const), pk: pkArb, e: eArb, v: fc.nat(3) }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('respell' as const), pk: pkArb, v: fc.nat(3) }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('claim' as const), pk: pkArb, from: pkArb, v: fc.nat(3) }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('rename' as const), pk: pkArb }) },
  { weight: 1, arbitrary: fc.constant({ k: 'empty' as const }) },
);
const rare = <T>(arb: fc.Arbitrary<T>, none: T, weight = 4) => fc.oneof({ weight, arbitrary: fc.constant(none) }, { weight: 1, arbitrary: arb });
const historyArb: fc.Arbitrary<History> = fc.record({
  foreign: fc.array(emailArb, { maxLength: 2 }),
  steps: fc.array(fc.record({ ops: fc.array(opArb, { maxLength: 3 }), foreign: rare(emailArb, null, 6) }), { minLength: 1, maxLength: STEPS }),
});
const runArb: fc.Arbitrary<RunSpec> = fc.record({
  trigger: fc.record({ allowDeletions: rare(fc.constant(true), false), fullResync: rare(fc.constant(true), false, 9) }),
  faults: rare(fc.record({ seed: fc.nat(), reject: fc.subarray(LOCALS, { maxLength: 2 }), flaky: fc.boolean(), downAfter: fc.option(fc.nat(6), { freq: 3 }) }), NO_FAULTS, 3),
  collapse: rare(fc.constant(true), false, 6),
  settle: rare(fc.constant(false), true, 3),
});
const caseArb: fc.Arbitrary<Case> = fc.record({
  mode: fc.constantFrom<SyncModeT>('mirror', 'mirror', 'upsert', 'update'),
  equality: fc.oneof({ weight: 4, arbitrary: fc.constant<Equality>('case_insensitive') }, { weight: 1, arbitrary: fc.constant<Equality>('exact') }),
  batchSize: fc.integer({ min: 1, max: 8 }),
  concurrency: fc.integer({ min: 1, max: 3 }),
  thresholds: fc.record({
    maxDeletes: rare(fc.nat(6), null),
    maxDeletePercent: rare(fc.integer({ min: 0, max: 100 }), null),
    maxChanges: rare(fc.nat(16), null, 8),
    maxChangePercent: rare(fc.integer({ min: 0, max: 200 }), null, 8),
    allowEmptyModel: rare(fc.constant(true), false),
  }),
  histories: fc.array(historyArb, { minLength: GROUPS, maxLength: GROUPS }),
  runs: fc.array(runArb, { minLength: STEPS, maxLength: STEPS }),
});

type Rows = Map<number, PersonRow>;

/** Applies one op of group g's history (its primary keys are g*10+1 … g*10+7). */
function applyOp(rows: Rows, g: number, op: Op, name: () => string): void {
  const at = (pk: number) => g * 10 + pk;
  const r = op.k === 'empty' ? undefined : rows.get(at(op.pk));
  switch (op.k) {
    case 'insert':
      if (!r) rows.set(at(op.pk), { email: spelling(g, op.e, op.v), name: name() });
      break;
    case 'delete':
      rows.delete(at(op.pk));
      break;
    case 'rekey':
      if (r && !rows.has(at(op.to))) (rows.delete(at(op.pk)), rows.set(at(op.to), r));
      break;
    case 'move':
      if (r) r.email = spelling(g, op.e, op.v);
      break;
    case 'respell':
      if (r && localOf(r.email) >= 0) r.email = spelling(g, localOf(r.email), op.v);
      break;
    case 'claim': {
      const from = rows.get(at(op.from));
      if (r && localOf(from?.email) >= 0) r.email = spelling(g, localOf(from!.email), op.v);
      break;
    }
    case 'rename':
      if (r) r.name = name();
      break;
    case 'empty':
      for (const pk of [...rows.keys()]) if (Math.floor(pk / 10) === g) rows.delete(pk);
      break;
  }
}

// ---- The oracle: the modes' rules over a plain model of the destination ---------------------

/** What Backhaul knows it wrote: destination key → the row that last claimed it, as sent. */
type Known = Map<string, { pk: number; email: string; name: string; id: string }>;

interface Expected {
  /** Rows sent, by primary key: insert (a record Backhaul does not know) or update. */
  writes: Map<number, 'insert' | 'update'>;
  /** Records a mirror run deletes, grouped by the row that last claimed them (one per row and run). */
  deletes: Map<number, string[]>;
  /** Invalid rows: their code, and for shared records the other rows. */
  invalid: Map<number, { code: string; others: number[] }>;
  counts: OpCounts;
}

function claimsOf(rows: Rows, eq: Equality): Map<string, number[]> {
  const claims = new Map<string, number[]>();
  for (const [pk, r] of rows) {
    const k = destKey(r.email, eq);
    if (k !== null) claims.set(k, [...(claims.get(k) ?? []), pk]);
  }
  return claims;
}

function expectedPlan(rows: Rows, known: Known, mode: SyncModeT, eq: Equality, trig: Trigger): Expected {
  const claims = claimsOf(rows, eq);
  const invalid = new Map<number, { code: string; others: number[] }>();
  const writes = new Map<number, 'insert' | 'update'>();
  for (const [pk, r] of rows) {
    const k = destKey(r.email, eq);
    if (k === null) {
      invalid.set(pk, { code: 'missing_match_value', others: [] });
      continue;
    }
    const claimants = claims.get(k)!;
    if (claimants.length > 1) {
      invalid.set(pk, { code: 'duplicate_match_value', others: claimants.filter((o) => o !== pk) });
      continue;
    }
    const was = known.get(k);
    // A record Backhaul does not know is created (update mode: updated by match key); a known one
    // is updated when its row's payload changed, another row claimed it last, or on a full resync.
    if (!was) writes.set(pk, mode === 'update' ? 'update' : 'insert');
    else if (trig.fullResync || was.pk !== pk || was.email !== r.email || was.name !== r.name) writes.set(pk, 'update');
  }
  // Mirror deletes the records Backhaul wrote that no row claims, unless the row that last
  // claimed one is in the model but invalid (where its record went is unknown).
  const deletes = new Map<number, string[]>();
  if (mode === 'mirror') {
    for (const [k, was] of known) {
      if (claims.has(k) || invalid.has(was.pk)) continue;
      deletes.set(was.pk, [...(deletes.get(was.pk) ?? []), k]);
    }
  }
  const ws = [...writes.values()];
  const counts = { insert: ws.filter((o) => o === 'insert').length, update: ws.filter((o) => o === 'update').length, delete: deletes.size };
  return { writes, deletes, invalid, counts };
}

/** The change thresholds as the README states them (null: the run may go). */
function expectedGuard(th: ChangeThresholdsT, c: OpCounts, snapshot: number, queried: number, trig: Trigger): string | null {
  if (c.delete > 0 && !trig.allowDeletions) {
    if (queried === 0 && snapshot > 0 && !th.allowEmptyModel) return 'deletion_guard';
    if (th.maxDeletes !== null && c.delete > th.maxDeletes) return 'deletion_guard';
    if (th.maxDeletePercent !== null && snapshot > 0 && (c.delete * 100) / snapshot > th.maxDeletePercent) return 'deletion_guard';
  }
  if (trig.fullResync) return null;
  // Deletes a trigger allowed do not count against the change limits.
  const changes = c.insert + c.update + (trig.allowDeletions ? 0 : c.delete);
  if (th.maxChanges !== null && changes > th.maxChanges) return 'change_guard';
  if (th.maxChangePercent !== null && snapshot > 0 && (changes * 100) / snapshot > th.maxChangePercent) return 'change_guard';
  return null;
}

// ---- The harness -----------------------------------------------------------------------------

type DestState = Map<string, { email: string; name: string }>;
const destState = (d: MemoryDestination): DestState => new Map([...d.records].map(([k, r]) => [k, { email: r.email, name: r.name }]));
const show = (x: unknown) => JSON.stringify(x, (_k, v) => (v instanceof Map ? Object.fromEntries(v) : v instanceof Set ? [...v] : v));

function sameState(a: DestState, b: DestState): boolean {
  if (a.size !== b.size) return false;
  for (const [k, v] of a) {
    const w = b.get(k);
    if (!w || w.email !== v.email || w.name !== v.name) return false;
  }
  return true;
}

t.test('destination identity holds through the engine\'s plan and checkpoints over thousands of model sequences', async (t) => {
  const h = await startTestBackhaul(t, { env: { LOG_LEVEL: 'fatal' } });
  // The lanes' own pool: each run holds one connection for its COPY and uses another beside it.
  const database = connectDatabase(h.databaseUrl, { max: LANES * 2 + 2 });
  t.teardown(() => database.close());
  const sql = database.sql;
  const log = pino({ level: 'silent' });
  const mappings: MappingSpec[] = [
    { destinationField: 'email', source: { column: 'email' } },
    { destinationField: 'name', source: { column: 'name' } },
  ];
  let runNo = 0;
  let totalRuns = 0;
  let totalSteps = 0;
  let sequences = 0;
  // What the runs exercised (printed at the end, so a generator that stops reaching a case shows).
  const seen = { collapse: 0, insert: 0, update: 0, delete: 0, deferredDelete: 0, shared: 0, blank: 0, deletion_guard: 0, change_guard: 0, wentDown: 0, rejected: 0, settled: 0, unsettled: 0, unchangedRerun: 0 };
  const started = Date.now();

  // Each lane has a sync of its own (its snapshot); mode, delivery and thresholds are the
  // sequence's, given to the phases directly. (Made one after the other: they share a schema.)
  const fixtures: Awaited<ReturnType<typeof setupSync>>[] = [];
  for (let i = 0; i < LANES; i++) fixtures.push(await setupSync(t, h, 'http://127.0.0.1:9/', { slug: `lane${i}` }));

  async function lane(i: number): Promise<void> {
    const fx = fixtures[i];
    const [s] = await sql<{ workspace_id: string; snapshot_version: number }[]>`select workspace_id, snapshot_version from syncs where id = ${fx.syncId}`;
    const base = syncView(await h.bh.services.syncs.row(h.bh.database.db, s.workspace_id, fx.syncId));
    const run0 = { workspaceId: s.workspace_id, syncId: fx.syncId };

    const property = fc.asyncProperty(caseArb, async (seq) => {
      sequences += seq.histories.length;
      await sql`delete from sync_snapshots where sync_id = ${fx.syncId}`;
      await sql`delete from runs where sync_id = ${fx.syncId}`;
      const dest = new MemoryDestination(seq.equality);
      for (const [g, f] of seq.histories.flatMap((hs, g) => hs.foreign.map((f) => [g, f] as const))) {
        const e = spelling(g, f.e, f.v);
        if (e) dest.addForeign(e, 'someone else');
      }
      const sync: SyncViewT = { ...base, mode: seq.mode, delivery: { batchSize: seq.batchSize, concurrency: seq.concurrency, maxRequestsPerSecond: null, maxRetries: 30 }, changeThresholds: seq.thresholds };
      const rows: Rows = new Map();
      const known: Known = new Map();
      let names = 0;
      const eq = seq.equality;
      const ctx = (what: string) => `${what}\n  rows ${show(rows)}\n  known ${show(known)}\n  destination ${show(destState(dest))}`;
      const fail = (what: string): never => {
        throw new Error(ctx(what));
      };

      /** One run through the engine's phases; checks everything the oracle can say about it. */
      const run = async (trig: Trigger, faults: DestFaults): Promise<{ blocked: boolean; failed: boolean }> => {
        totalRuns++;
        const id = `run_prop${i}x${++runNo}`;
        const run = { id, ...run0 };
        await sql`
          insert into runs (id, workspace_id, sync_id, status, trigger, counts, attempts, full_resync, allow_deletions, snapshot_version, started_at)
          values (${id}, ${run0.workspaceId}, ${run0.syncId}, 'running', 'api', ${JSON.stringify(emptyCounts())}::jsonb, 1, ${trig.fullResync}, ${trig.allowDeletions}, ${s.snapshot_version}, now())`;
        const claims = claimsOf(rows, eq);
        const exp = expectedPlan(rows, known, seq.mode, eq, trig);
        const before = destState(dest);
        dest.beginRun(faults, new Set(claims.keys()));
        const signal = new AbortController().signal;
        const counts = emptyCounts();
        let error: unknown;
        let plan: { pk: string; op: string; mkey: string; record_id: string | null }[] = [];
        try {
          const read = await queryPhase({ sql, run, model: { sql: 'people', primaryKey: 'id' }, matchKey: { sourceColumn: 'email', destinationField: 'email' }, mappings, fields: await dest.fields(), source: memorySource(() => [...rows]), counts, readBatchSize: 1000, signal });
          // Records found by index lookups and by hash joins alternately: both must plan the same.
          const lookups = runNo % 2 ? 'index' : 'hash';
          // Duplicates found by the aggregates, or (two runs in three, as the executor does) skipped
          // where the staging writer proved the keys distinct: both must find the same.
          const dups = await markDuplicates(sql, id, undefined, lookups, runNo % 3 ? { distinct: read.distinct } : {});
          counts.invalid += dups.length;
          await recordInvalid(sql, run, dups);
          const snapshot = await snapshotSize(sql, fx.syncId);
          const { planned } = await buildPlan(sql, id, { syncId: fx.syncId, mode: seq.mode, fullResync: trig.fullResync, matchField: 'email', lookups });
          counts.planned = planned;

          // The plan: every write and delete the rules give, with its row and record.
          const { plan: planTable } = stagingNames(id);
          plan = await sql<typeof plan>`select pk, op, mkey, record_id from ${sql(STAGING_SCHEMA)}.${sql(planTable)} order by seq`;
          if (show(planned) !== show(exp.counts)) fail(`planned ${show(planned)}, the rules give ${show(exp.counts)}; plan ${show(plan)}`);
          const deletePks = new Set<number>();
          let sawDelete = false;
          for (const p of plan) {
            const pk = Number(p.pk);
            if (p.op === 'delete') {
              sawDelete = true;
              const group = exp.deletes.get(pk);
              const key = JSON.parse(p.mkey) as string;
              if (!group?.includes(key) || deletePks.has(pk)) fail(`planned delete of ${key} (row ${pk}); the rules delete ${show(exp.deletes)}`);
              deletePks.add(pk);
              if (p.record_id !== known.get(key)!.id) fail(`delete of ${key} names record ${p.record_id}, Backhaul knows it as ${known.get(key)!.id}`);
            } else {
              if (sawDelete) fail(`a ${p.op} planned after a delete: ${show(plan)}`);
              if (exp.writes.get(pk) !== p.op) fail(`planned ${p.op} of row ${pk}; the rules give ${exp.writes.get(pk) ?? 'nothing'}`);
              if (p.mkey !== JSON.stringify(destKey(rows.get(pk)!.email, eq))) fail(`row ${pk} planned against record ${p.mkey}`);
            }
          }

          // The change thresholds, where the executor checks them: between planning and sending.
          const guard = expectedGuard(seq.thresholds, exp.counts, known.size, rows.size, trig);
          if (seq.mode === 'mirror' && rows.size === 0 && known.size > 0 && !trig.allowDeletions && !seq.thresholds.allowEmptyModel && guard !== 'deletion_guard') {
            fail('an emptied model would delete the whole snapshot');
          }
          if (seq.mode === 'mirror' && rows.size === 0 && known.size > 0) seen.collapse++;
          try {
            checkThresholds(seq.thresholds, { planned, snapshot, queried: counts.queried, allowDeletions: trig.allowDeletions, fullResync: trig.fullResync });
          } catch (e) {
            error = e;
          }
          const code = (error as { code?: string } | undefined)?.code ?? null;
          if (code !== guard) fail(`thresholds ${show(seq.thresholds)} with plan ${show(planned)} of ${known.size} records (trigger ${show(trig)}): got ${code}, the rules give ${guard}`);
          if (!error) {
            await deliverPhase({
              sql,
              run,
              lease: 1,
              snapshotVersion: s.snapshot_version,
              sync,
              dest,
              destConnId: `mem_lane${i}`,
              destType: 'memory',
              destConfig: {},
              counts,
              insertsAreNew: true,
              recordsFresh: true,
              resumeAfterBatch: undefined,
              clock: realClock,
              retryBaseMs: 0,
              retryMaxMs: 0,
              signal,
              cancelRequested: () => false,
              log,
            }).catch((e) => {
              error = e;
            });
          }
        } finally {
          await dropRunTables(sql, id);
        }
        for (const op of ['insert', 'update', 'delete'] as const) seen[op] += exp.counts[op];
        seen.deferredDelete += [...exp.deletes.values()].reduce((n, ks) => n + ks.length - 1, 0);
        for (const v of exp.invalid.values()) seen[v.code === 'duplicate_match_value' ? 'shared' : 'blank']++;
        const blocked = error !== undefined && ['deletion_guard', 'change_guard'].includes((error as { code: string }).code);
        if (error && !blocked && !dest.wentDown) fail(`run failed: ${String((error as Error).stack ?? error)}`);
        if (dest.violations.length) fail(dest.violations.join('; '));

        // Invalid rows: exactly the rules' ones; rows sharing a record name each other.
        const recs = await sql<{ primary_key: string; operation: string; status: string; error_code: string | null; error_message: string | null }[]>`
          select primary_key, operation, status, error_code, error_message from run_outcomes where run_id = ${id}`;
        const invalid = recs.filter((r) => r.status === 'invalid');
        if (invalid.length !== exp.invalid.size) fail(`invalid rows ${show(invalid)}; the rules give ${show(exp.invalid)}`);
        for (const r of invalid) {
          const want = exp.invalid.get(Number(r.primary_key));
          if (!want || want.code !== r.error_code) fail(`row ${r.primary_key} invalid with ${r.error_code}; the rules give ${show(want)}`);
          for (const o of want!.others) if (!r.error_message?.includes(`"${o}"`)) fail(`row ${r.primary_key}'s reason does not name row ${o}: ${r.error_message}`);
        }

        // What the destination acknowledged is what Backhaul now knows.
        for (const a of dest.acks) {
          if (a.op === 'delete') known.delete(a.key);
          else known.set(a.key, { pk: Number(a.primaryKey), email: a.email, name: a.name, id: a.id });
        }
        const snap = await sql<{ match_key: string; primary_key: string; record_id: string | null }[]>`select match_key, primary_key, record_id from sync_snapshots where sync_id = ${fx.syncId}`;
        const snapKnown = new Map(snap.map((r) => [JSON.parse(r.match_key) as string, { pk: Number(r.primary_key), id: r.record_id }]));
        if (snapKnown.size !== known.size || [...known].some(([k, v]) => snapKnown.get(k)?.pk !== v.pk || snapKnown.get(k)?.id !== v.id)) {
          fail(`snapshot ${show(snapKnown)} is not what the destination acknowledged`);
        }

        // The destination: unchanged by a blocked run; otherwise the plan applied, each record
        // either as before or as planned when the destination went down part-way.
        const after = destState(dest);
        if (blocked) {
          if (dest.requests > 0 || !sameState(before, after)) fail(`a run stopped by ${(error as { code: string }).code} sent ${dest.requests} requests`);
          seen[(error as { code: 'deletion_guard' | 'change_guard' }).code]++;
          return { blocked: true, failed: false };
        }
        const want: DestState = new Map(before);
        for (const [pk, op] of exp.writes) {
          const r = rows.get(pk)!;
          const k = destKey(r.email, eq)!;
          if (faults.reject.includes(k.trim().toLowerCase().split('@')[0])) {
            seen.rejected++;
            continue;
          }
          if (op === 'update' && seq.mode === 'update' && !before.has(k)) continue; // refused: not_found
          want.set(k, { email: r.email!, name: r.name });
        }
        for (const p of plan) {
          const k = JSON.parse(p.mkey) as string;
          if (p.op === 'delete' && !faults.reject.includes(k.trim().toLowerCase().split('@')[0])) want.delete(k);
        }
        if (dest.wentDown) {
          for (const k of new Set([...before.keys(), ...after.keys(), ...want.keys()])) {
            const [a, b, w] = [after.get(k), before.get(k), want.get(k)];
            if (show(a) !== show(b) && show(a) !== show(w)) fail(`after a failed run ${k} is ${show(a)}: neither as before (${show(b)}) nor as planned (${show(w)})`);
          }
          seen.wentDown++;
          return { blocked: false, failed: true };
        }
        if (!sameState(want, after)) fail(`destination ${show(after)}; the plan applied to ${show(before)} gives ${show(want)}`);
        return { blocked: false, failed: false };
      };

      /** Work the rules still give for the unchanged model (update mode's refused rows excepted). */
      const pending = () => {
        const e = expectedPlan(rows, known, seq.mode, eq, { allowDeletions: false, fullResync: false });
        const doomed = [...e.writes].filter(([pk]) => seq.mode === 'update' && !dest.records.has(destKey(rows.get(pk)!.email, eq)!)).length;
        return e.writes.size - doomed + e.deletes.size;
      };

      const steps = Math.max(...seq.histories.map((hs) => hs.steps.length));
      for (let n = 0; n < steps; n++) {
        totalSteps++;
        const spec = seq.runs[n];
        if (spec.collapse) rows.clear();
        seq.histories.forEach((hs, g) => {
          const step = hs.steps[n];
          if (!step) return;
          for (const op of step.ops) applyOp(rows, g, op, () => `n${++names}`);
          const e = step.foreign && spelling(g, step.foreign.e, step.foreign.v);
          if (e) dest.addForeign(e, 'someone else');
        });
        const start = { dest: destState(dest), known: new Map(known) };
        let last = await run(spec.trigger, spec.faults);
        let clean = spec.faults === NO_FAULTS && !spec.trigger.fullResync;
        // Settle: the unchanged model again, without faults, until the rules give nothing more.
        for (let k = 0; k < 4 && spec.settle && !last.blocked && (!clean || last.failed || pending() > 0); k++) {
          last = await run({ allowDeletions: spec.trigger.allowDeletions, fullResync: false }, NO_FAULTS);
          clean = true;
        }
        if (last.blocked || last.failed || pending() > 0) {
          seen.unsettled++;
          continue;
        }
        seen.settled++;

        // Settled: the destination is what the mode's rules say for this model, from where it was.
        const claims = claimsOf(rows, eq);
        const validKeys = new Map<string, number>();
        for (const [k, pks] of claims) if (pks.length === 1) validKeys.set(k, pks[0]);
        const invalidPks = new Set([...rows.keys()].filter((pk) => { const k = destKey(rows.get(pk)!.email, eq); return k === null || claims.get(k)!.length > 1; }));
        const now = destState(dest);
        for (const [k, pk] of validKeys) {
          const r = rows.get(pk)!;
          const shouldHold = seq.mode !== 'update' || start.dest.has(k);
          const got = now.get(k);
          if (shouldHold && (!got || got.email !== r.email || got.name !== r.name)) fail(`settled ${seq.mode}: row ${pk} should be held as ${show(r)}, the destination has ${show(got)}`);
          if (!shouldHold && got) fail(`settled update: ${k} was created`);
        }
        for (const k of new Set([...start.dest.keys(), ...now.keys()])) {
          if (validKeys.has(k)) continue;
          const was = start.known.get(k);
          const gone = seq.mode === 'mirror' && !claims.has(k) && was !== undefined && !invalidPks.has(was.pk);
          if (gone && now.has(k)) fail(`settled mirror: ${k}, which Backhaul wrote and no row claims, is still there`);
          if (!gone && show(now.get(k)) !== show(start.dest.get(k))) fail(`settled ${seq.mode}: ${k}, which no valid row claims, changed from ${show(start.dest.get(k))} to ${show(now.get(k))}`);
        }
      }

      // The unchanged model once more: nothing that was acknowledged is sent again.
      const settled = pending() === 0;
      const q = await run({ allowDeletions: false, fullResync: false }, NO_FAULTS);
      if (settled && !q.blocked) {
        seen.unchangedRerun++;
        const again = dest.acks.filter((a) => a.op === 'write').map((a) => a.key);
        if (again.length) fail(`${again.join(', ')} sent again for an unchanged model`);
      }
      return true;
    });

    const seed = SEED + i;
    const details = await fc.check(property, { numRuns: Math.ceil(CASES / LANES), seed, endOnFailure: !SHRINK, ...(PATH ? { path: PATH } : {}) });
    if (details.failed) {
      t.fail(`lane ${i}: property failed (replay: PROPERTY_LANES=1 PROPERTY_SEED=${seed} PROPERTY_PATH=${details.counterexamplePath})\n${fc.defaultReportMessage(details)}\n${String((details.errorInstance as Error)?.stack ?? details.errorInstance)}`);
    } else {
      t.pass(`lane ${i}: ${details.numRuns} cases (seed ${seed})`);
    }
  }

  await Promise.all(Array.from({ length: LANES }, (_, i) => lane(i)));
  t.comment(`exercised: ${show(seen)}`);
  t.comment(`${sequences} sequences in ${LANES * Math.ceil(CASES / LANES)} cases, ${totalSteps} steps, ${totalRuns} runs in ${((Date.now() - started) / 1000).toFixed(1)} s`);
});
