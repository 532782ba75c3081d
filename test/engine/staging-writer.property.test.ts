import t from 'tap';
import fc from 'fast-check';
import { connectDatabase } from '../../src/db/client.ts';
import { createStaging, STAGING_SCHEMA, stagingNames, StagingWriter, type StagedDistinct } from '../../src/engine/staging.ts';
import { freshDatabase } from '../helpers/backhaul.ts';

// StagingWriter encodes each row's fields as COPY text straight into byte chunks. Whatever the
// rows hold (tabs, newlines, backslashes, every plane of Unicode, nulls, empty strings) and
// wherever a chunk ends (rows far smaller and far larger than a chunk), PostgreSQL must read back
// exactly the values written, in order: a byte misplaced at a chunk's edge or a field escaped
// wrongly would stage another payload than the one hashed, or fail the run's COPY. And what the
// writer proves of the keys (none duplicated: markDuplicates then skips its aggregates) must be
// what PostgreSQL finds.

const RUNS = Number(process.env.PROPERTY_RUNS ?? 60);

/** Text PostgreSQL can store: no NUL, no lone surrogate (the engine turns such rows invalid before staging). */
const storable = (maxLength: number) =>
  fc
    .string({ unit: fc.oneof(fc.constantFrom('\t', '\n', '\r', '\\', '\\N', 'N', ' ', 'é'), fc.string({ unit: 'binary', minLength: 1, maxLength: 1 })), maxLength })
    .map((s) => s.replace(/\0/g, '').toWellFormed());
const big = fc.integer({ min: 200_000, max: 600_000 }).map((n) => 'x\t\\é'.repeat(Math.ceil(n / 4)).slice(0, n));
const field = (maxLength: number) => fc.option(fc.oneof({ weight: 20, arbitrary: storable(maxLength) }, { weight: 1, arbitrary: big }), { nil: null, freq: 5 });
// Keys drawn from a few values too (escapes, non-ASCII, empty) so that runs repeat some.
const fewKeys = fc.constantFrom('1', '2', 'a\tb', 'a\\tb', 'é', '', '\\N');
const row = fc.record({
  pk: fc.oneof({ weight: 3, arbitrary: storable(40) }, { weight: 1, arbitrary: fewKeys }),
  hash: fc.option(fc.string({ unit: 'grapheme-ascii', maxLength: 30 }).map((s) => s.replace(/[\t\n\r\\]/g, '')), { nil: null }),
  payload: field(2_000),
  state: fc.constantFrom('v' as const, 'v' as const, 'i' as const, 'g' as const),
  match: field(100),
  mkey: fc.oneof({ weight: 1, arbitrary: field(100) }, { weight: 2, arbitrary: fewKeys }),
  fp: fc.option(storable(60), { nil: null }),
});

t.test('every row staged reads back exactly, in order, across chunk edges', async (t) => {
  const database = connectDatabase(await freshDatabase(t), { max: 3 });
  t.teardown(() => database.close());
  const { sql } = database;
  await sql`create schema if not exists ${sql(STAGING_SCHEMA)}`;
  let n = 0;
  const proved = { pks: [0, 0], mkeys: [0, 0] };
  await fc.assert(
    fc.asyncProperty(fc.array(row, { maxLength: 400 }), async (rows) => {
      const runId = `run_stgw${n++}`;
      await createStaging(sql, runId);
      const writer = await StagingWriter.open(sql, runId);
      let proof: StagedDistinct;
      try {
        for (const r of rows) {
          const w = writer.write(r.pk, r.hash, r.payload, r.state, r.match, r.mkey, r.fp);
          if (w) await w;
        }
        proof = await writer.end();
      } catch (e) {
        writer.destroy();
        throw e;
      }
      // What the writer proved is what markDuplicates' aggregates would find (no collision at these sizes).
      const stg = sql`${sql(STAGING_SCHEMA)}.${sql(stagingNames(runId).stg)}`;
      const [truth] = await sql<{ pks: boolean; mkeys: boolean }[]>`
        select not exists (select pk from ${stg} group by pk having count(*) > 1) as pks,
               not exists (select mkey from ${stg} where state = 'v' and mkey is not null group by mkey having count(*) > 1) as mkeys`;
      if (proof.primaryKeys !== truth.pks || proof.matchKeys !== truth.mkeys) {
        throw new Error(`proof ${JSON.stringify(proof)}, PostgreSQL ${JSON.stringify(truth)}`);
      }
      proved.pks[proof.primaryKeys ? 1 : 0]++;
      proved.mkeys[proof.matchKeys ? 1 : 0]++;
      // ctid order is COPY order in a fresh table.
      const back = await sql<(typeof rows[number] & { seq: string })[]>`
        select pk, hash, payload, state, match, mkey, fp, seq from ${sql(STAGING_SCHEMA)}.${sql(stagingNames(runId).stg)} order by ctid`;
      await sql`drop table ${sql(STAGING_SCHEMA)}.${sql(stagingNames(runId).stg)}`;
      if (back.length !== rows.length) throw new Error(`${back.length} rows read back of ${rows.length}`);
      rows.forEach((r, i) => {
        const { seq, ...b } = back[i];
        // seq numbers the rows in the order written (a plan over stg_<run> is read by it).
        if (seq !== String(i + 1)) throw new Error(`row ${i}: seq ${seq}`);
        if (JSON.stringify(b) !== JSON.stringify(r)) throw new Error(`row ${i}: wrote ${JSON.stringify(r).slice(0, 300)}, read ${JSON.stringify(b).slice(0, 300)}`);
      });
    }),
    { numRuns: RUNS },
  );
  t.pass(`${RUNS} sequences of rows staged and read back`);
  t.comment(`primary keys duplicated / distinct: ${proved.pks.join(' / ')}; match keys: ${proved.mkeys.join(' / ')}`);
  t.ok(proved.pks[0] > 0 && proved.pks[1] > 0 && proved.mkeys[0] > 0 && proved.mkeys[1] > 0, 'both answers were checked for both keys');
});
