import t, { type Test } from 'tap';
import { PostgresSource } from '../../src/connectors/sources/postgres.ts';
import { MysqlSource } from '../../src/connectors/sources/mysql.ts';
import { PREVIEW_MAX_TOTAL_BYTES, PREVIEW_MAX_VALUE_BYTES, PreviewCollector, cutUtf8 } from '../../src/connectors/sources/preview-bounds.ts';
import type { PreviewResult } from '../../src/connectors/types.ts';
import { mysqlAdmin, mysqlConfig, pgConfig, uniqueName } from '../fakes/databases.ts';
import { startTcpProxy } from '../helpers/tcp-proxy.ts';

// Issue 13 item 9 (preview part): a preview of huge values answers, cut per value (64 KiB) and
// in total (1 MiB), says so, and does not pull the huge values through Backhaul's memory.

const MiB = 1024 * 1024;

function checkBounded(t: Test, r: PreviewResult, bigColumns: string[]) {
  const body = JSON.stringify(r);
  t.ok(Buffer.byteLength(body) < PREVIEW_MAX_TOTAL_BYTES + 64 * 1024, `the response stays near 1 MiB (${Buffer.byteLength(body)} bytes)`);
  t.ok(r.truncated, 'truncation is marked');
  t.ok((r.truncated?.values ?? 0) >= r.rows.length, 'cut values are counted');
  t.equal(r.truncated?.maxValueBytes, PREVIEW_MAX_VALUE_BYTES);
  t.equal(r.truncated?.maxTotalBytes, PREVIEW_MAX_TOTAL_BYTES);
  t.ok(r.rows.length > 0, 'rows are returned');
  const uncut = r.rows.flatMap((row) => bigColumns.filter((c) => typeof row[c] !== 'string' || Buffer.byteLength(row[c] as string) > PREVIEW_MAX_VALUE_BYTES + 3 || !(row[c] as string).endsWith('…')));
  t.same(uncut, [], `every long value (${bigColumns.join(', ')}) is cut to 64 KiB and ends with "…"`);
}

t.test('values are cut on whole characters, and a first row never exceeds the total', async (t) => {
  t.equal(cutUtf8('aé€😀', 1), 'a');
  t.equal(cutUtf8('aé€😀', 2), 'a', 'é needs two bytes');
  t.equal(cutUtf8('aé€😀', 3), 'aé');
  t.equal(cutUtf8('aé€😀', 7), 'aé€', '😀 needs four bytes');
  t.equal(cutUtf8('aé€😀', 10), 'aé€😀');
  const c = new PreviewCollector(10, 25);
  t.ok(c.add({ a: 'x'.repeat(40), b: 'y'.repeat(40), n: 1 }));
  t.same(c.rows[0], { a: `${'x'.repeat(10)}…`, b: `${'y'.repeat(10)}…`, n: 1 });
  t.notOk(c.add({ a: 'small' }), 'the total is spent');
  t.same(c.result([]).truncated, { values: 2, rowsOmitted: true, maxValueBytes: 10, maxTotalBytes: 25 });
  const json = new PreviewCollector(12, 1000);
  json.add({ doc: { k: 'z'.repeat(50) } });
  t.equal(json.rows[0].doc, '{"k":"zzzzzz…', 'a long JSON value becomes its cut text');
  const small = new PreviewCollector();
  small.add({ a: 1, b: 'x' });
  t.same(small.result([]), { columns: [], rows: [{ a: 1, b: 'x' }] }, 'nothing cut: no truncated member');
});

t.test('postgres: long values are cut by the server, rows fetched within the budget', { timeout: 120_000 }, async (t) => {
  const pg = pgConfig();
  const proxy = await startTcpProxy({ host: pg.config.host, port: pg.config.port });
  t.teardown(() => proxy.close());
  const s = new PostgresSource({ ...pg.config, host: proxy.host, port: proxy.port }, pg.password ? { password: pg.password } : {});
  t.teardown(() => s.close());
  // 30 rows of a 4 MiB text and a ~200 KB jsonb: 126 MB of values.
  const sql = `select g as id, repeat('x', ${4 * MiB}) as big, jsonb_build_object('k', repeat('é', 100000)) as doc, 'small' as s from generate_series(1, 30) g`;
  const r = await s.preview(sql, 100);
  checkBounded(t, r, ['big', 'doc']);
  t.equal(r.truncated?.rowsOmitted, true, 'rows past the budget are left out, and that is said');
  t.same(r.rows[0].id, 1);
  t.same(r.rows[0].s, 'small', 'short values are untouched');
  t.same(r.columns.map((c) => [c.name, c.type]), [['id', 'integer'], ['big', 'string'], ['doc', 'json'], ['s', 'string']], 'columns keep their types');
  t.ok(proxy.bytesDown < 4 * MiB, `only the cut values crossed the wire (${proxy.bytesDown} bytes)`);
  const plain = await s.preview("select 1 as id, '{\"a\": 1}'::jsonb as doc, null::text as n", 5);
  t.same(plain, { columns: plain.columns, rows: [{ id: 1, doc: { a: 1 }, n: null }] }, 'a small preview is unchanged');
});

const my = await mysqlAdmin();
if (!my) {
  t.skip('MariaDB not reachable at 127.0.0.1:3306', () => {});
} else {
  const db = uniqueName();
  t.before(async () => {
    await my.query(`CREATE DATABASE ${db}`);
    await my.query(`CREATE TABLE ${db}.digits (d INT)`);
    await my.query(`INSERT INTO ${db}.digits VALUES (0),(1),(2),(3),(4),(5),(6),(7),(8),(9)`);
  });
  t.teardown(async () => {
    await my.query(`DROP DATABASE IF EXISTS ${db}`);
    await my.end();
  });

  t.test('mariadb: rows are read one at a time and reading stops at the budget', { timeout: 120_000 }, async (t) => {
    const proxy = await startTcpProxy({ host: '127.0.0.1', port: 3306 });
    t.teardown(() => proxy.close());
    const s = new MysqlSource(mysqlConfig({ database: db, host: proxy.host, port: proxy.port }), {});
    t.teardown(() => s.close());
    // 100 rows of 1 MiB.
    const r = await s.preview(`SELECT a.d * 10 + b.d AS id, REPEAT('x', ${MiB}) AS big FROM digits a, digits b ORDER BY id`, 100);
    checkBounded(t, r, ['big']);
    t.equal(r.truncated?.rowsOmitted, true);
    t.ok(proxy.bytesDown < 40 * MiB, `reading stopped near the budget (${Math.round(proxy.bytesDown / MiB)} MiB of 100 crossed the wire)`);
    t.same((await s.preview('SELECT 1 AS id', 5)).rows, [{ id: 1 }], 'a small preview is unchanged');
  });
}
