import t from 'tap';
import fc from 'fast-check';
import { once } from 'node:events';
import postgres from 'postgres';
import { copyTextLine, copyTextValue, FingerprintIndex, LineSplitter } from '../../src/engine/fingerprint-index.ts';

// An incremental run decides which keys to read in full either in SQL (a hashed join of the
// scanned keys, copied into the control database, with the snapshot, grouped by key) or, when
// the snapshot is small enough, in memory while the scan streams (FingerprintIndex). Both must
// pick the same keys for any snapshot and scan: keys new or changed, keys the scan saw twice,
// keys two records hold with one fingerprint, NULL and empty keys counted apart; whatever the
// escaping of the scan's COPY text (PostgreSQL's, the MariaDB source's, octal and hex escapes)
// and wherever its chunks are cut. The SQL side is PostgreSQL's own COPY parser and join.
// The diff then needs the snapshot records no scanned row claims (same key and fingerprint):
// in SQL an anti-join with the scanned keys, in memory the pairs the index never saw (unm_<run>,
// its lines read back by PostgreSQL's COPY). Both must name the same pairs.

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
  // The fingerprints' usual prefix, which the index keeps once (memory only).
  prefix: fc.constantFrom('v1:', 'v0:', 'v1:5', ''),
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
  await sql.unsafe(`create table ${schema}.unm (pk text, fp text)`);

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
      const r = await c.unsafe(`copy (select primary_key, source_fp from ${schema}.snap where sync_id = 's') to stdout`).readable();
      for await (const chunk of r as AsyncIterable<Buffer>) copied.push(chunk);
    });
    const rows = await sql.unsafe<{ pk: string }[]>(`
      select kk.pk from ${schema}.keys kk
      left join ${schema}.snap n on n.sync_id = 's' and n.primary_key = kk.pk and n.source_fp = kk.fp
      where kk.pk <> ''
      group by kk.pk having count(*) > 1 or bool_and(n.primary_key is not null) is not true`);
    const unclaimed = await sql.unsafe<{ pk: string; fp: string }[]>(`
      select distinct primary_key as pk, source_fp as fp from ${schema}.snap n
      where sync_id = 's' and source_fp is not null
        and not exists (select 1 from ${schema}.keys kk where kk.pk = n.primary_key and kk.fp = n.source_fp)`);
    return { bad: k.bad, changed: rows.map((r) => r.pk).sort(), unclaimed: pairs(unclaimed), snapshotText: Buffer.concat(copied) };
  };
  const pairs = (rows: { pk: string; fp: string }[]) => rows.map((r) => JSON.stringify([r.pk, r.fp])).sort();
  /** The index's unmatched lines as PostgreSQL's COPY reads them (each pair once). */
  const readBack = async (chunks: Buffer[]) => {
    await sql.unsafe(`truncate ${schema}.unm`);
    await conn0(async (c) => {
      const w = await c.unsafe(`copy ${schema}.unm (pk, fp) from stdin`).writable();
      const done = once(w, 'finish');
      for (const ch of chunks) w.write(ch);
      w.end();
      await done;
    });
    const rows = await sql.unsafe<{ pk: string; fp: string }[]>(`select pk, fp from ${schema}.unm`);
    const listed = pairs(rows);
    if (new Set(listed).size !== listed.length) throw new Error(`a pair listed twice: ${listed.join(' ')}`);
    return listed;
  };
  const conn0 = async (fn: (c: postgres.ReservedSql) => Promise<void>) => {
    const c = await sql.reserve();
    try {
      await fn(c);
    } finally {
      c.release();
    }
  };

  const inMemory = (snapshotChunks: Buffer[], chunks: Buffer[], prefix: string) => {
    const index = new FingerprintIndex(0, undefined, prefix);
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
    return { bad, changed: [...changed].sort(), rest: splitter.end(), unmatched: [...index.unmatched()], records: index.records };
  };

  await fc.assert(
    fc.asyncProperty(caseArb, async ({ snapshot, scan, repeat, escaper, cuts, prefix }) => {
      const lines = [...scan];
      for (const i of repeat) if (snapshot.length && snapshot[i % snapshot.length].fp) lines.push({ pk: snapshot[i % snapshot.length].pk, fp: snapshot[i % snapshot.length].fp! });
      const esc = escapers[escaper];
      const text = lines.map((l) => `${l.pk === null ? '\\N' : esc(l.pk)}\t${l.fp}\n`).join('');
      const want = await bySql(snapshot, text);
      const got = inMemory(cut(want.snapshotText, cuts), cut(Buffer.from(text, 'utf8'), cuts), prefix);
      if (got.rest !== undefined) throw new Error(`left over: ${got.rest}`);
      if (got.bad !== want.bad) throw new Error(`bad keys: ${got.bad} in memory, ${want.bad} in SQL`);
      // Every record is counted, with a fingerprint or without (the change thresholds' base).
      if (got.records !== snapshot.length) throw new Error(`records: ${got.records} in memory, ${snapshot.length} in SQL`);
      // The same keys (collation aside: compared as sets of exact strings).
      if (JSON.stringify(got.changed) !== JSON.stringify(want.changed)) {
        throw new Error(`in memory ${JSON.stringify(got.changed)}, SQL ${JSON.stringify(want.changed)}`);
      }
      // Without bad keys (the run then reads every row), the records no scanned row claims.
      if (want.bad === 0) {
        const unclaimed = await readBack(got.unmatched);
        if (JSON.stringify(unclaimed) !== JSON.stringify(want.unclaimed)) {
          throw new Error(`unclaimed in memory ${JSON.stringify(unclaimed)}, SQL ${JSON.stringify(want.unclaimed)}`);
        }
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
  t.same([...index.unmatched()].map(String), [], 'every pair was shown');
});

t.test('unmatched lines come back whole across segments, long lines included', async (t) => {
  const index = new FingerprintIndex(0, undefined, 'v:');
  const long = 'k'.repeat(5 * 1024 * 1024);
  const lines = [...Array.from({ length: 200_000 }, (_, i) => `key-${i}-${'x'.repeat(i % 50)}\tv:${i}`), `${long}\tv:long`, `${long}\tw:long`, 'after\tv:1', 'other\tw:v:1'];
  const refused = lines.filter((l) => {
    const b = Buffer.from(l);
    return !index.addLine(b, 0, b.length);
  });
  t.equal(refused.length, 0, 'every line added');
  // Show every other line: the rest are unmatched.
  const splitter = new LineSplitter((buf, s, e) => index.probeLine(buf, s, e));
  splitter.push(lines.filter((_, i) => i % 2 === 0).join('\n') + '\n');
  const got = Buffer.concat([...index.unmatched()]).toString('utf8').split('\n').slice(0, -1).sort();
  const want = lines.filter((_, i) => i % 2 === 1).sort();
  t.equal(got.length, want.length, 'as many lines as pairs not shown');
  t.ok(got.every((l, i) => l === want[i]), 'each line as it was loaded');
});

// The cross-run cache (fingerprint-cache.ts) keeps a run's table and brings it up to date by
// dropping the records of the keys the run may have written (removeKey) and adding their current
// ones (addLine of copyTextLine), then reset() before the next scan. After any number of such
// rounds, and whatever the previous scans marked, it must answer every scan as a table loaded
// from the current snapshot (PostgreSQL's COPY text) does: the same keys read in full, the same
// unmatched records, the same count.
t.test('a kept table brought up to date answers as one loaded afresh', async (t) => {
  const snapshotArb = fc.array(fc.record({ pk: keyArb.filter((k) => k !== ''), fp: fc.option(fpArb, { nil: null }) }), { maxLength: 30 });
  const scanArb = fc.array(fc.record({ pk: keyArb.filter((k) => k !== ''), fp: fpArb }), { maxLength: 30 });
  const roundArb = fc.record({ next: snapshotArb, extraKeys: fc.array(keyArb.filter((k) => k !== ''), { maxLength: 5 }), scan: scanArb, repeat: fc.array(fc.nat(), { maxLength: 20 }) });
  const load = (snapshot: { pk: string; fp: string | null }[], prefix: string) => {
    const index = new FingerprintIndex(0, undefined, prefix);
    for (const r of snapshot) {
      const line = Buffer.from(`${pgEscape(r.pk)}\t${r.fp === null ? '\\N' : pgEscape(r.fp)}`, 'utf8');
      if (!index.addLine(line, 0, line.length)) throw new Error('table full');
    }
    return index;
  };
  const answers = (index: FingerprintIndex, scan: { pk: string; fp: string }[]) => {
    const probes = scan.map((l) => {
      const line = Buffer.from(`${pgEscape(l.pk)}\t${l.fp}`, 'utf8');
      const p = index.probeLine(line, 0, line.length);
      return p.kind === 'changed' ? `changed:${p.pk}` : p.kind;
    });
    const unmatched = Buffer.concat([...index.unmatched()])
      .toString('utf8')
      .split('\n')
      .slice(0, -1)
      .map((l) => l.split('\t').map(copyTextValue).join('\t'))
      .sort();
    return JSON.stringify({ probes, unmatched, records: index.records });
  };
  await fc.assert(
    fc.property(snapshotArb, fc.array(roundArb, { minLength: 1, maxLength: 6 }), fc.constantFrom('v1:', ''), (first, rounds, prefix) => {
      let current = first;
      const kept = load(current, prefix);
      // A first scan marks what it marks.
      answers(kept, rounds[0].scan);
      for (const { next, extraKeys, scan, repeat } of rounds) {
        // The keys whose records differ, and a few more (the run's keys are a superset).
        const byKey = (s: typeof current) => Map.groupBy(s, (r) => r.pk);
        const before = byKey(current);
        const after = byKey(next);
        const keys = new Set(extraKeys);
        for (const k of new Set([...before.keys(), ...after.keys()])) {
          const a = JSON.stringify((before.get(k) ?? []).map((r) => r.fp).sort());
          const b = JSON.stringify((after.get(k) ?? []).map((r) => r.fp).sort());
          if (a !== b) keys.add(k);
        }
        for (const k of keys) kept.removeKey(k);
        kept.records = next.length - next.filter((r) => keys.has(r.pk)).length;
        for (const r of next.filter((r) => keys.has(r.pk))) {
          const line = copyTextLine(r.pk, r.fp);
          if (!kept.addLine(line, 0, line.length)) throw new Error('table full');
        }
        kept.reset();
        current = next;
        const lines = [...scan];
        for (const i of repeat) if (next.length && next[i % next.length].fp) lines.push({ pk: next[i % next.length].pk, fp: next[i % next.length].fp! });
        const got = answers(kept, lines);
        const want = answers(load(current, prefix), lines);
        if (got !== want) throw new Error(`kept ${got}\nfresh ${want}`);
      }
    }),
    { numRuns: RUNS * 20, ...(process.env.PROPERTY_SEED ? { seed: Number(process.env.PROPERTY_SEED), path: process.env.PROPERTY_PATH } : {}) },
  );
  t.pass(`${RUNS * 20} sequences of runs compared`);
});

t.test('a kept table sheds removed records when it grows, and counts its garbage', async (t) => {
  const index = new FingerprintIndex(0, undefined, 'v:');
  const add = (s: string) => {
    const b = Buffer.from(s);
    t.ok(index.addLine(b, 0, b.length) || false, `added ${s}`);
  };
  for (let i = 0; i < 600; i++) add(`${i}\tv:1`);
  for (let i = 0; i < 300; i++) t.equal(index.removeKey(String(i)), 1);
  t.equal(index.removeKey('0'), 0, 'a removed key is gone');
  t.ok(index.garbage >= 0.5, `garbage ${index.garbage}`);
  for (let i = 600; i < 1400; i++) add(`${i}\tv:1`);
  t.equal(index.size, 1100, 'the growth dropped the removed pairs');
  const splitter = new LineSplitter((buf, s, e) => index.probeLine(buf, s, e));
  splitter.push(Array.from({ length: 1400 }, (_, i) => `${i}\tv:1\n`).join(''));
  const unmatched = Buffer.concat([...index.unmatched()]).toString('utf8');
  t.equal(unmatched, '', 'no removed record is listed');
});
