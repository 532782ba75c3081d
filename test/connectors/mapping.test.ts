import t from 'tap';
import fc from 'fast-check';
import { deepStrictEqual } from 'node:assert';
import { coerceValue, compileMappings, type MappingSpec } from '../../src/connectors/mapping.ts';
import { stringifyJson, stringifyPayload } from '../../src/lib/json.ts';
import type { DestinationField } from '../../src/connectors/types.ts';
import { expectCode } from '../fakes/databases.ts';

const fields: DestinationField[] = [
  { name: 'email', type: 'string', required: true, identifier: true },
  { name: 'firstname', type: 'string', required: false, identifier: false },
  { name: 'fullname', type: 'string', required: false, identifier: false },
  { name: 'age', type: 'integer', required: false, identifier: false },
  { name: 'ltv', type: 'decimal', required: false, identifier: false },
  { name: 'vip', type: 'boolean', required: false, identifier: false },
  { name: 'signed_up', type: 'timestamp', required: false, identifier: false },
  { name: 'birthday', type: 'date', required: false, identifier: false },
  { name: 'source', type: 'string', required: false, identifier: false },
  { name: 'props', type: 'json', required: false, identifier: false },
  { name: 'external_id', type: 'string', required: false, identifier: false },
];
const mappings: MappingSpec[] = [
  { destinationField: 'email', source: { column: 'email' } },
  { destinationField: 'firstname', source: { column: 'first_name' } },
  { destinationField: 'fullname', source: { template: '{{ first_name }} {{ last_name | upper }}' } },
  { destinationField: 'age', source: { column: 'age' } },
  { destinationField: 'ltv', source: { column: 'lifetime_value' } },
  { destinationField: 'vip', source: { column: 'is_vip' } },
  { destinationField: 'signed_up', source: { column: 'created_at' } },
  { destinationField: 'birthday', source: { column: 'born' } },
  { destinationField: 'source', source: { static: 'backhaul' } },
  { destinationField: 'props', source: { column: 'attrs' } },
  { destinationField: 'external_id', source: { column: 'id' } },
];
const row = {
  id: '9007199254740993', email: 'ada@x.io', first_name: 'Ada', last_name: 'Lovelace', age: '36',
  lifetime_value: '12345678901234567890.0123456789', is_vip: 'yes', created_at: '2024-03-04 05:06:07',
  born: '1990-12-31T00:00:00Z', attrs: { plan: 'pro' },
};

t.test('a realistic row maps and coerces', async (t) => {
  const map = compileMappings(mappings, fields, { columns: Object.keys(row) });
  const out = map(row);
  t.equal(out.ok, true);
  // The decimal is a JSON number with every digit; the big id stays text for a string field.
  t.equal(
    stringifyPayload((out as { payload: Record<string, unknown> }).payload),
    '{"email":"ada@x.io","firstname":"Ada","fullname":"Ada LOVELACE","age":36,"ltv":12345678901234567890.0123456789,"vip":true,' +
      '"signed_up":"2024-03-04T05:06:07.000Z","birthday":"1990-12-31","source":"backhaul","props":{"plan":"pro"},"external_id":"9007199254740993"}',
  );
  const nulls = map({ ...row, age: null, is_vip: undefined, born: '', first_name: null });
  t.match(nulls, { ok: true, payload: { age: null, vip: null, birthday: null, firstname: null, fullname: ' LOVELACE' } });
});

t.test('a value that cannot be coerced makes the row invalid, naming the field', async (t) => {
  const map = compileMappings(mappings, fields);
  t.same(map({ ...row, age: 'abc' }), { ok: false, code: 'invalid_value', message: 'field "age": "abc" is not an integer' });
  t.match(map({ ...row, age: 3.5 }), { ok: false, message: 'field "age": 3.5 is not an integer' });
  t.match(map({ ...row, is_vip: 'maybe' }), { ok: false, message: /field "vip": "maybe" is not a boolean/ });
  t.match(map({ ...row, created_at: 'last tuesday' }), { ok: false, message: /field "signed_up": "last tuesday" is not a timestamp/ });
  t.match(map({ ...row, born: '2023-02-30' }), { ok: false, message: /field "birthday".*not a date/ });
  t.match(map({ ...row, lifetime_value: '12,5' }), { ok: false, message: /field "ltv"/ });
  const { last_name: _omit, ...noLast } = row;
  t.match(map(noLast), { ok: false, code: 'template_error', message: /field "fullname".*"last_name"/ });
  t.match(compileMappings([{ destinationField: 'x', source: { column: '__proto__' } }])({}), { ok: true, payload: { x: null } }, 'no prototype values');
});

t.test('coercion table', async (t) => {
  const ok = (v: unknown, type: Parameters<typeof coerceValue>[1], want: unknown) => t.same(coerceValue(v, type), { ok: true, value: want }, `${typeof v === 'bigint' ? v : JSON.stringify(v)} → ${type}`);
  // Exact numbers are compared as the JSON text they are sent as.
  const exact = (v: unknown, type: Parameters<typeof coerceValue>[1], json: string) => {
    const c = coerceValue(v, type);
    t.equal(c.ok && stringifyJson(c.value), json, `${typeof v === 'bigint' ? v : JSON.stringify(v)} → ${type} → ${json}`);
  };
  ok('42', 'integer', 42);
  ok(' -007 ', 'integer', -7);
  ok('12.000', 'integer', 12);
  exact('123456789012345678901', 'integer', '123456789012345678901');
  exact('-9007199254740993', 'integer', '-9007199254740993');
  exact(10n ** 20n, 'integer', '100000000000000000000');
  ok(1.25, 'decimal', 1.25);
  ok('0.5', 'decimal', 0.5);
  exact('1e3', 'decimal', '1e3');
  exact('+007.50', 'decimal', '7.50');
  exact('.5', 'decimal', '0.5');
  exact('12345678901234567890.0123456789', 'decimal', '12345678901234567890.0123456789');
  exact(JSON.parse('{"n": 9007199254740993}', (_k, v, ctx?: { source?: string }) => (typeof v === 'number' && ctx?.source ? (JSON as unknown as { rawJSON(s: string): unknown }).rawJSON(ctx.source) : v)).n, 'integer', '9007199254740993');
  ok('9007199254740993', 'string', '9007199254740993');
  ok(0, 'boolean', false);
  ok('TRUE', 'boolean', true);
  ok(42, 'string', '42');
  ok(true, 'string', 'true');
  ok({ a: 1 }, 'string', '{"a":1}');
  ok(new Date('2024-01-02T03:04:05Z'), 'timestamp', '2024-01-02T03:04:05.000Z');
  ok('2024-01-02T03:04:05.123456Z', 'timestamp', '2024-01-02T03:04:05.123456Z');
  ok('2024-01-02T05:04:05+02:00', 'timestamp', '2024-01-02T03:04:05.000Z');
  ok('2024-01-02', 'timestamp', '2024-01-02T00:00:00.000Z');
  ok(1704164645, 'timestamp', '2024-01-02T03:04:05.000Z');
  ok(1704164645000, 'timestamp', '2024-01-02T03:04:05.000Z');
  ok('2024-01-02T23:30:00-02:00', 'date', '2024-01-03');
  ok(null, 'integer', null);
  ok('', 'integer', null);
  ok('', 'string', '');
  ok('{"a":1}', 'json', '{"a":1}');
  t.same(coerceValue(true, 'integer'), { ok: false, reason: 'true is not an integer' });
  t.same(coerceValue(NaN, 'decimal').ok, false);
});

t.test('compile-time errors', async (t) => {
  await expectCode(t, async () => compileMappings([{ destinationField: 'x', source: { lookup: { object: 'owners', matchField: 'email', sourceColumn: 'owner', resultField: 'id' } } }]), 'lookup_not_supported');
  await expectCode(t, async () => compileMappings([{ destinationField: 'age', source: { static: 'old' } }], fields), 'invalid_mapping');
  await expectCode(t, async () => compileMappings([{ destinationField: 'a', source: { column: 'x' } }, { destinationField: 'a', source: { column: 'y' } }]), 'invalid_mapping');
  await expectCode(t, async () => compileMappings([{ destinationField: 'a', source: { column: 'nope' } }], {}, { columns: ['x'] }), 'invalid_mapping');
  await expectCode(t, async () => compileMappings([{ destinationField: 'a', source: { template: '{{ nope }}' } }], {}, { columns: ['x'] }), 'invalid_template');
  const withLookup = compileMappings([{ destinationField: 'owner', source: { lookup: { object: 'owners', matchField: 'email', sourceColumn: 'o', resultField: 'id' } } }], { owner: 'integer' }, {
    resolveLookup: (spec, r) => (r[spec.sourceColumn] === 'x@y' ? '7' : null),
  });
  t.same(withLookup({ o: 'x@y' }), { ok: true, payload: { owner: 7 } });
});

// Speed is measured by `npm run bench` (end-to-end rows/s), never by a timed test. What a test can
// prove is that one compiled mapping serves every row of a run: it carries no state from one row
// to the next, so mapping a row through it equals mapping it through a freshly compiled one.
t.test('one compiled mapping serves many rows: no state carried between rows', async (t) => {
  const shared = compileMappings(mappings, fields);
  const value = fc.oneof(fc.constant(null), fc.string({ maxLength: 12 }), fc.integer().map(String), fc.boolean(), fc.constantFrom('2024-03-04 05:06:07', 'yes', 'no', '1e3', '-0'));
  const rowArb = fc.record({
    id: fc.bigInt({ min: 0n, max: 2n ** 64n }).map(String),
    email: fc.emailAddress(),
    first_name: value,
    last_name: value,
    age: value,
    lifetime_value: value,
    is_vip: value,
    created_at: value,
    born: value,
    attrs: fc.oneof(fc.constant(null), fc.dictionary(fc.string({ maxLength: 5 }), fc.string({ maxLength: 5 }), { maxKeys: 3 })),
  });
  // fc.assert throws with the smallest failing sequence of rows.
  fc.assert(
    fc.property(fc.array(rowArb, { minLength: 1, maxLength: 30 }), (rows) => {
      for (const r of rows) deepStrictEqual(shared(r), compileMappings(mappings, fields)(r));
    }),
    { numRuns: 200 },
  );
  t.same(shared(row), compileMappings(mappings, fields)(row), 'and the realistic row still maps the same after them');
});
