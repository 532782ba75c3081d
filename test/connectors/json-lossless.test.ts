import t, { type Test } from 'tap';
import fc from 'fast-check';
import { coerceValue, compileMappings } from '../../src/connectors/mapping.ts';
import { parseJson, parsePayload, stringifyJson, stringifyPayload } from '../../src/lib/json.ts';
import { PostgresSource } from '../../src/connectors/sources/postgres.ts';
import { MysqlSource } from '../../src/connectors/sources/mysql.ts';
import { collect, mysqlAdmin, mysqlConfig, pgConfig, uniqueName } from '../fakes/databases.ts';

// Issue 12 item 6: integers beyond 2^53 and long decimals survive end to end: parsed from
// json/jsonb columns without rounding, mapped to numeric fields as exact JSON numbers, staged
// and sent through stringifyPayload/parsePayload digit for digit.

const BEYOND = 2n ** 53n;

/** JSON number texts a double cannot hold: big integers (±) and decimals with many digits. */
const bigInteger = fc.bigInt({ min: BEYOND + 1n, max: 10n ** 40n }).chain((n) => fc.constantFrom(n.toString(), `-${n}`));
const longDecimal = fc
  .tuple(fc.bigInt({ min: 0n, max: 10n ** 25n }), fc.stringMatching(/^[0-9]{1,30}$/), fc.boolean())
  .map(([i, f, neg]) => `${neg ? '-' : ''}${i}.${f}`);
const exactNumber = fc.oneof(bigInteger, longDecimal, fc.integer().map(String), fc.double({ noNaN: true, noDefaultInfinity: true }).map((d) => JSON.stringify(d)));

/** A random JSON document, built as text, whose numbers are drawn from `exactNumber`. */
const jsonText: fc.Arbitrary<string> = fc.letrec<{ value: string }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    exactNumber,
    fc.string().map((s) => JSON.stringify(s)),
    fc.constantFrom('true', 'false', 'null'),
    fc.array(tie('value'), { maxLength: 4 }).map((xs) => `[${xs.join(',')}]`),
    fc.dictionary(fc.string({ maxLength: 6 }), tie('value'), { maxKeys: 4 }).map((o) => `{${Object.entries(o).map(([k, v]) => `${JSON.stringify(k)}:${v}`).join(',')}}`),
  ),
})).value;

t.test('parseJson keeps every number exactly as written (property)', async (t) => {
  fc.assert(
    fc.property(jsonText, (text) => {
      const v = parseJson(text);
      // Keys of a JSON object are re-ordered by JSON.parse only for integer-like keys: compare through a second round.
      const once = stringifyJson(v);
      if (stringifyJson(parseJson(once)) !== once) return false;
      // Every number of the input appears, with its digits, in the output.
      const nums = (s: string) => (s.match(/-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?=[,\]}]|$)/g) ?? []).sort();
      return JSON.stringify(nums(once)) === JSON.stringify(nums(text));
    }),
    { numRuns: 2000 },
  );
  t.equal(stringifyJson(parseJson('{"account_id": 9007199254740993, "score": 12345678901234567890.5}')), '{"account_id":9007199254740993,"score":12345678901234567890.5}');
  t.equal(stringifyJson({ n: 12345678901234567890n }), '{"n":12345678901234567890}', 'bigint values are written exactly');
  t.throws(() => parsePayload('[1]'), TypeError, 'a payload is an object');
});

t.test('number-like text inside strings (timestamps, phone numbers) takes the fast path and changes nothing (property)', async (t) => {
  // parseJson's pre-check looks for inexact numbers outside strings only: strings holding ".000Z"
  // or 16 digits must come back as written, and the numbers beside them exactly.
  const numberLike = fc.oneof(
    fc.date({ noInvalidDate: true }).map((d) => d.toISOString()),
    fc.stringMatching(/^\+?[0-9 ]{16,24}$/),
    longDecimal,
    bigInteger,
    fc.constantFrom('-0', '1e5', '.5', '1.50', 'a\\"b.0', '\\', '"'),
  );
  fc.assert(
    fc.property(fc.dictionary(fc.string({ maxLength: 6 }), fc.oneof(numberLike.map((s) => JSON.stringify(s)), exactNumber), { maxKeys: 6 }), (o) => {
      const text = `{${Object.entries(o).map(([k, v]) => `${JSON.stringify(k)}:${v}`).join(',')}}`;
      const once = stringifyJson(parseJson(text));
      const plain = JSON.parse(text) as Record<string, unknown>;
      const back = parseJson(once) as Record<string, unknown>;
      for (const [k, v] of Object.entries(plain)) if (typeof v === 'string' && back[k] !== v) return false;
      const nums = (s: string) => (s.match(/-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?=[,\]}]|$)/g) ?? []).sort();
      return stringifyJson(parseJson(once)) === once && JSON.stringify(nums(once)) === JSON.stringify(nums(text));
    }),
    { numRuns: 2000 },
  );
  t.equal(stringifyJson(parseJson('{"at":"2024-01-01T00:00:00.000Z","v":1.50}')), '{"at":"2024-01-01T00:00:00.000Z","v":1.50}');
  t.equal(stringifyJson(parseJson('{"phone":"+44 20 7946 0000 0000","n":9007199254740993}')), '{"phone":"+44 20 7946 0000 0000","n":9007199254740993}');
});

t.test('mapped to numeric fields: exact JSON numbers; to string fields: the text (property)', async (t) => {
  const map = compileMappings(
    [
      { destinationField: 'n', source: { column: 'v' } },
      { destinationField: 'd', source: { column: 'v' } },
      { destinationField: 's', source: { column: 'v' } },
    ],
    { n: 'integer', d: 'decimal', s: 'string' },
  );
  fc.assert(
    fc.property(bigInteger, (text) => {
      const r = map({ v: text });
      if (!r.ok) return false;
      const wire = stringifyPayload(r.payload);
      const want = `{"n":${text},"d":${text},"s":"${text}"}`;
      return wire === want && stringifyPayload(parsePayload(wire)) === want;
    }),
    { numRuns: 1000 },
  );
  const dmap = compileMappings([{ destinationField: 'd', source: { column: 'v' } }], { d: 'decimal' });
  fc.assert(
    fc.property(longDecimal, (text) => {
      const r = dmap({ v: text });
      if (!r.ok) return false;
      const wire = stringifyPayload(r.payload);
      const value = /^\{"d":(.*)\}$/.exec(wire)?.[1] ?? '';
      // Exactly the same number: same sign, integer part and fraction (trailing zeros aside).
      const norm = (s: string) => s.replace(/^(-?)0+(?=\d)/, '$1').replace(/(\.\d*?)0+$/, '$1').replace(/\.$/, '').replace(/^-0$/, '0');
      return norm(value) === norm(text) && stringifyPayload(parsePayload(wire)) === wire;
    }),
    { numRuns: 1000 },
  );
  // A number inside a json column, mapped to an integer field.
  const fromJson = parseJson('{"id": 9007199254740993}') as Record<string, unknown>;
  const c = coerceValue(fromJson.id, 'integer');
  t.equal(c.ok && stringifyJson({ id: c.value }), '{"id":9007199254740993}');
  t.equal(stringifyPayload(map({ v: 36 }).ok ? (map({ v: 36 }) as { payload: Record<string, unknown> }).payload : {}), '{"n":36,"d":36,"s":"36"}');
});

const DOC = '{"account_id": 9007199254740993, "score": 12345678901234567890.5, "nested": [1, -98765432109876543210, 0.1]}';
const expectDoc = (t: Test, v: unknown, what: string) => {
  const text = stringifyJson(v);
  for (const n of ['9007199254740993', '12345678901234567890.5', '-98765432109876543210', '0.1']) t.ok(text.includes(n), `${what}: ${n} survives (${text})`);
};

t.test('postgres: json and jsonb columns parse losslessly (preview and stream)', async (t) => {
  const pg = pgConfig();
  const s = new PostgresSource(pg.config, pg.password ? { password: pg.password } : {});
  t.teardown(() => s.close());
  const sql = `select 1 as id, '${DOC}'::jsonb as b, '${DOC}'::json as j`;
  const p = await s.preview(sql, 1);
  expectDoc(t, p.rows[0].b, 'preview jsonb');
  expectDoc(t, p.rows[0].j, 'preview json');
  const [[row]] = await collect(s.stream(sql));
  expectDoc(t, row.b, 'stream jsonb');
  expectDoc(t, row.j, 'stream json');
  // Through the mapping, to the wire, and back.
  const map = compileMappings([{ destinationField: 'props', source: { column: 'b' } }, { destinationField: 'account', source: { template: '{{ j }}' } }], { props: 'json', account: 'string' });
  const r = map(row);
  t.ok(r.ok);
  const wire = stringifyPayload((r as { payload: Record<string, unknown> }).payload);
  expectDoc(t, parsePayload(wire).props, 'payload');
  t.match(wire, /9007199254740993/);
});

t.test('postgres: random exact numbers in jsonb come back digit for digit (property, real database)', async (t) => {
  const pg = pgConfig();
  const s = new PostgresSource(pg.config, pg.password ? { password: pg.password } : {});
  t.teardown(() => s.close());
  await fc.assert(
    fc.asyncProperty(fc.array(fc.oneof(bigInteger, longDecimal), { minLength: 1, maxLength: 5 }), async (nums) => {
      const doc = `[${nums.join(',')}]`;
      const { rows } = await s.preview(`select '${doc}'::json as j, '${doc}'::jsonb as b, '${doc}'::jsonb::text as canonical`, 1);
      // json keeps the text; jsonb's own text form is the reference for its digits.
      return stringifyJson(rows[0].j) === doc && stringifyJson(rows[0].b) === String(rows[0].canonical).replace(/, /g, ',');
    }),
    { numRuns: 25 },
  );
});

const my = await mysqlAdmin();
if (!my) {
  t.skip('MariaDB not reachable at 127.0.0.1:3306', () => {});
} else {
  t.test('mariadb: JSON columns parse losslessly (preview and stream)', async (t) => {
    const db = uniqueName();
    await my.query(`CREATE DATABASE ${db}`);
    t.teardown(async () => {
      await my.query(`DROP DATABASE IF EXISTS ${db}`);
      await my.end();
    });
    await my.query(`CREATE TABLE ${db}.docs (id INT PRIMARY KEY, doc JSON)`);
    await my.query(`INSERT INTO ${db}.docs VALUES (1, ?)`, [DOC]);
    const s = new MysqlSource(mysqlConfig({ database: db }), {});
    t.teardown(() => s.close());
    const p = await s.preview('SELECT id, doc FROM docs', 1);
    expectDoc(t, p.rows[0].doc, 'preview JSON');
    const [[row]] = await collect(s.stream('SELECT id, doc FROM docs'));
    expectDoc(t, row.doc, 'stream JSON');
    t.equal(p.columns.find((c) => c.name === 'doc')?.type, 'json');
  });
}


