import t from 'tap';
import fc from 'fast-check';
import { once } from 'node:events';
import postgres from 'postgres';
import { FingerprintIndex, LineSplitter } from '../../src/engine/fingerprint-index.ts';

// An incremental run decides which keys to read in full either in SQL (a hashed join of the
// scanned keys, copied into the control database, with the snapshot, grouped by key) or, when
// the snapshot is small enough, in memory while the scan streams (FingerprintIndex). Both must
// pick the same keys for any snapshot and scan: keys new or changed, keys the scan saw twice,
// keys two records hold with one fingerprint, NULL and empty keys counted apart; whatever the
// escaping of the scan's COPY text (PostgreSQL's, the MariaDB source's, octal and hex escapes)
// and wherever its chunks are cut. The SQL side is PostgreSQL's own COPY parser and join.

const RUNS = Number(process.env.PROPERTY_RUNS ?? 60);
const url = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

// Few distinct keys and fingerprints, so that matches, duplicates and near misses are common.
const keyArb = fc.oneof(
  fc.constantFrom('1', '2', '3', '10', 'a', 'A', 'é', 'x y', 'N', '\\N'),
  fc.stringMatching(/^[a-c\\\t\n\r\u0008\u000b\u000cé☃ ]{1,4}$/),
);
const fpArb = fc.constantFrom('v1:5', 'v1:-7', 'v1:12345678901234', 'v0:5', 'v1:5 ');
const escaperArb = fc.constantFrom<'postgres' | 'mariadb' | 'octal'>('postgres', 'mariadb', 'octal');

/** COPY text escaping as PostgreSQL's COPY TO writes it. */
const pgEscape = (s: string) => s.replace(/[\\\b\f\n\r\t\v]/g, (c) => ({ '\\': '\\\\', '\b': '\\b', '\f': '\\f', '\n': '\\n', '\r': '\\r', '\t': '\\t', '\v': '\\v' })[c]!);
/** As the MariaDB source writes it (src/connectors/sources/mysql.ts). */
const myEscape = (s: string) => s.replace(/[\\\t\n\r]/g, (c) => (c === '\\' ? '\\\\' : c === '\t' ? '\\t' : c === '\n' ? '\\n' : '\\r'));
/** Valid but unusual: every ASCII letter and control character as octal or hex. */
const octalEscape = (s: string) =>
  [...s].map((c, i) => (c === '\\' ? '\\\\' : /[\x00-\x1fa-zA-Z]/.test(c) ? (i % 2 ? `\\x${c.charCodeAt(0).toString(16)}` : `\\${c.charCodeAt(0).toString(8).padStart(3, '0')}`) : c)).join('');
const escapers = { postgres: pgEscape, mariadb: myEscape, octal: octalEscape };

const caseArb = fc.record({
  snapshot: fc.array(fc.record({ pk: keyArb.filter((k) => k !== ''), fp: fc.option(fpArb, { nil: null }) }), { maxLength: 25 }),
  scan: fc.array(fc.record({ pk: fc.oneof({ weight: 12, arbitrary: keyArb }, { weight: 1, arbitrary: fc.constantFrom(null, '') }), fp: fpArb }), { maxLength: 25 }),
  // Rows of the snapshot that the scan repeats unchanged (the common case).
  repeat: fc.array(fc.nat(), { maxLength: 15 }),
  escaper: escaperArb,
  cuts: fc.array(fc.nat(), { maxLength: 6 }),
});

/** The bytes in chunks, cut where `cuts` say (modulo the length). */
function cut(bytes: Buffer, cuts: number[]): Buffer[] {
  const at = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let prev = 0;
  for (const c of [...at, bytes.length]) {
    chunks.push(bytes.subarray(prev, c));
    prev = c;
  }
  return chunks;
}

t.test('the in-memory comparison picks the keys the SQL comparison picks', async (t) => {
  const sql = postgres(url, { max: 2, onnotice: () => {} });
  const schema = `bh_fpidx_${process.pid}`;
  t.teardown(async () => {
    await sql.unsafe(`drop schema if exists ${schema} cascade`);
    await sql.end();
  });
  await sql.unsafe(`drop schema if exists ${schema} cascade; create schema ${schema}`);
  await sql.unsafe(`create table ${schema}.snap (sync_id text, primary_key text, source_fp text)`);
  await sql.unsafe(`create table ${schema}.keys (pk text, fp text)`);

  const bySql = async (snapshot: { pk: string; fp: string | null }[], text: string) => {
    await sql.unsafe(`truncate ${schema}.snap, ${schema}.keys`);
    if (snapshot.length) {
      await sql`insert into ${sql(schema)}.snap select 's', * from unnest(${snapshot.map((r) => r.pk)}::text[], ${snapshot.map((r) => r.fp)}::text[])`;
      // Another sync's records never count.
      await sql`insert into ${sql(schema)}.snap select 'other', * from unnest(${snapshot.map((r) => r.pk)}::text[], ${snapshot.map((r) => r.fp)}::text[])`;
    }
    const conn = await sql.reserve();
    try {
      const w = await conn.unsafe(`copy ${schema}.keys (pk, fp) from stdin`).writable();
      const done = once(w, 'finish');
      w.end(text);
      await done;
    } finally {
      conn.release();
    }
    const [k] = await sql.unsafe<{ bad: number }[]>(`select count(*) filter (where pk is null or pk = '')::int as bad from ${schema}.keys`);
    // The snapshot side as the engine reads it: PostgreSQL's COPY text of the sync's records.
    const copied: Buffer[] = [];
    await conn0(async (c) => {
      const r = await c.unsafe(`copy (select primary_key, source_fp from ${schema}.snap where sync_id = 's' and source_fp is not null) to stdout`).readable();
      for await (const chunk of r as AsyncIterable<Buffer>) copied.push(chunk);
    });
    const rows = await sql.unsafe<{ pk: string }[]>(`
      select kk.pk from ${schema}.keys kk
      left join ${schema}.snap n on n.sync_id = 's' and n.primary_key = kk.pk and n.source_fp = kk.fp
      where kk.pk <> ''
      group by kk.pk having count(*) > 1 or bool_and(n.primary_key is not null) is not true`);
    return { bad: k.bad, changed: rows.map((r) => r.pk).sort(), snapshotText: Buffer.concat(copied) };
  };
  const conn0 = async (fn: (c: postgres.ReservedSql) => Promise<void>) => {
    const c = await sql.reserve();
    try {
      await fn(c);
    } finally {
      c.release();
    }
  };

  const inMemory = (snapshotChunks: Buffer[], chunks: Buffer[]) => {
    const index = new FingerprintIndex(0);
    const load = new LineSplitter((buf, start, end) => {
      if (!index.addLine(buf, start, end)) throw new Error('table full');
    });
    for (const c of snapshotChunks) load.push(c);
    if (load.end()) throw new Error('snapshot text left over');
    let bad = 0;
    const changed = new Set<string>();
    const splitter = new LineSplitter((buf, start, end) => {
      const p = index.probeLine(buf, start, end);
      if (p.kind === 'bad') bad++;
      else if (p.kind === 'changed') changed.add(p.pk);
    });
    for (const c of chunks) splitter.push(c);
    return { bad, changed: [...changed].sort(), rest: splitter.end() };
  };

  await fc.assert(
    fc.asyncProperty(caseArb, async ({ snapshot, scan, repeat, escaper, cuts }) => {
      const lines = [...scan];
      for (const i of repeat) if (snapshot.length && snapshot[i % snapshot.length].fp) lines.push({ pk: snapshot[i % snapshot.length].pk, fp: snapshot[i % snapshot.length].fp! });
      const esc = escapers[escaper];
      const text = lines.map((l) => `${l.pk === null ? '\\N' : esc(l.pk)}\t${l.fp}\n`).join('');
      const want = await bySql(snapshot, text);
      const got = inMemory(cut(want.snapshotText, cuts), cut(Buffer.from(text, 'utf8'), cuts));
      if (got.rest !== undefined) throw new Error(`left over: ${got.rest}`);
      if (got.bad !== want.bad) throw new Error(`bad keys: ${got.bad} in memory, ${want.bad} in SQL`);
      // The same keys (collation aside: compared as sets of exact strings).
      if (JSON.stringify(got.changed) !== JSON.stringify(want.changed)) {
        throw new Error(`in memory ${JSON.stringify(got.changed)}, SQL ${JSON.stringify(want.changed)}`);
      }
    }),
    { numRuns: RUNS, ...(process.env.PROPERTY_SEED ? { seed: Number(process.env.PROPERTY_SEED), path: process.env.PROPERTY_PATH } : {}) },
  );
  t.pass(`${RUNS} snapshots and scans compared`);
});

t.test('a table grows past its first size and refuses pairs beyond its bound', async (t) => {
  const index = new FingerprintIndex(0, 5000);
  let added = 0;
  for (let i = 0; i < 5000; i++) {
    const line = Buffer.from(`${i}\tv:1`);
    if (index.addLine(line, 0, line.length)) added++;
  }
  t.equal(added, 5000, 'every pair added');
  t.equal(index.size, 5000);
  const over = Buffer.from('5000\tv:1');
  t.equal(index.addLine(over, 0, over.length), false, 'the bound holds');
  let unchanged = 0;
  const splitter = new LineSplitter((buf, s, e) => {
    if (index.probeLine(buf, s, e).kind === 'unchanged') unchanged++;
  });
  splitter.push(Array.from({ length: 5001 }, (_, i) => `${i}\tv:1\n`).join(''));
  t.equal(unchanged, 5000, 'every pair is found after the table grew');
});
