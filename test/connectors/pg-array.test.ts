import t from 'tap';
import fc from 'fast-check';
import { parsePgArray } from '../../src/connectors/sources/pg-client.ts';
import { PostgresSource } from '../../src/connectors/sources/postgres.ts';
import { collect, pgConfig } from '../fakes/databases.ts';

// The PostgreSQL source reads array types itself (postgres.js's own type query is off: its
// promise could reject unhandled). Arrays read back as the server holds them, whatever their text.

const pg = pgConfig();

t.test('parsePgArray reads the text forms PostgreSQL writes', async (t) => {
  const id = (x: string) => x;
  t.same(parsePgArray('{}', id), []);
  t.same(parsePgArray('{a,"b c",NULL,"NULL","x\\"y\\\\z"}', id), ['a', 'b c', null, 'NULL', 'x"y\\z']);
  t.same(parsePgArray('{{1,2},{3,4}}', Number), [[1, 2], [3, 4]]);
  t.same(parsePgArray('[0:1]={5,6}', Number), [5, 6]);
  t.same(parsePgArray('{(1,1),(0,0);(2,2),(1,1)}', id, ';'), ['(1,1),(0,0)', '(2,2),(1,1)']);
  t.equal(parsePgArray('not an array', id), 'not an array');
  t.equal(parsePgArray('{a,"b', id), '{a,"b', 'a cut literal stays text');
});

t.test('text[], int8[] and jsonb[] read back as written, any content (property)', async (t) => {
  const s = new PostgresSource(pg.config, pg.password ? { password: pg.password } : {});
  t.teardown(() => s.close());
  const text = fc.oneof(fc.string({ unit: 'grapheme', maxLength: 8 }).filter((x) => !x.includes('\u0000')), fc.constantFrom('NULL', '', ' a ', '"', '\\', '{}', ','));
  await fc.assert(
    fc.asyncProperty(fc.array(fc.option(text), { maxLength: 6 }), fc.array(fc.integer(), { maxLength: 4 }), async (xs, ns) => {
      const lit = (v: unknown) => `'${JSON.stringify(v).replace(/'/g, "''")}'::jsonb`;
      const rows = (
        await collect(
          s.stream(
            `select array(select x from jsonb_array_elements_text(${lit(xs)}) with ordinality e(x, i) order by i) as t, ` +
              `array(select x::int8 from jsonb_array_elements_text(${lit(ns)}) with ordinality e(x, i) order by i) as n, ` +
              `array[${lit({ k: xs })}, null]::jsonb[] as j`,
          ),
        )
      ).flat() as { t: unknown; n: unknown; j: unknown }[];
      t.same(rows[0].t, xs);
      t.same(rows[0].n, ns);
      t.same(rows[0].j, [{ k: xs }, null]);
    }),
    { numRuns: 60 },
  );
});
