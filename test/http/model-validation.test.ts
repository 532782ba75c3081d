import t from 'tap';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { controlDb, modelBody, ok, pgConnection } from '../helpers/http-fixtures.ts';

// Saving a model checks its SQL against the source (the real PostgreSQL on 127.0.0.1:5432):
// a query that does not compile, or lacks the primary-key column, is refused and not saved.

t.test('model SQL is validated against the source', async (t) => {
  const h = await startTestBackhaul(t);
  const sql = controlDb(h);
  t.teardown(() => sql.end());
  const src = await ok(h.request('POST', '/v1/connections', { body: pgConnection('warehouse') }));
  const modelCount = async () => (await sql`select count(*)::int as n from models`)[0].n as number;

  const good = await h.request('POST', '/v1/models', { body: modelBody('good', src.id, { sql: "select 1 as id, 'x' as email", primaryKey: 'id' }) });
  t.equal(good.status, 201, 'a valid query with its primary key is saved');

  const err = await h.request('POST', '/v1/models', { body: modelBody('broken', src.id, { sql: 'select id from no_such_table_anywhere' }) });
  t.equal(err.status, 422, 'SQL that does not compile: 422');
  t.match(err.headers.get('content-type'), /^application\/problem\+json/);
  t.equal(err.body.code, 'sql_error');
  t.equal(err.body.errors[0].path, '/sql');
  t.match(err.body.detail, /no_such_table_anywhere/, 'the database says why');

  const syntax = await h.request('POST', '/v1/models', { body: modelBody('syntax', src.id, { sql: 'select from where' }) });
  t.equal(syntax.status, 422, 'a syntax error: 422');
  t.equal(syntax.body.code, 'sql_error');

  const pk = await h.request('POST', '/v1/models', { body: modelBody('nopk', src.id, { sql: 'select 1 as user_id', primaryKey: 'id' }) });
  t.equal(pk.status, 422);
  t.equal(pk.body.code, 'primary_key_not_found');
  t.same(pk.body.errors, [{ path: '/primaryKey', message: 'is not a column of the query' }]);
  t.match(pk.body.detail, /user_id/, 'names the columns the query does return');

  const write = await h.request('POST', '/v1/models', { body: modelBody('writer', src.id, { sql: 'delete from pg_class' }) });
  t.equal(write.status, 422, 'a write statement is refused');

  t.equal(await modelCount(), 1, 'only the valid model was saved');

  // Updates are checked too, and a failed check changes nothing.
  const bad = await h.request('PATCH', '/v1/models/good', { body: { primaryKey: 'nope' } });
  t.equal(bad.status, 422);
  t.equal(bad.body.code, 'primary_key_not_found');
  const badSql = await h.request('PUT', '/v1/models/good', { body: modelBody('good', src.id, { slug: undefined, sql: 'select nope' }) });
  t.equal(badSql.status, 422);
  const cur = await ok(h.request('GET', '/v1/models/good'), 200);
  t.equal(cur.version, 1, 'unchanged');
  t.equal(cur.primaryKey, 'id');
  const renamed = await h.request('PATCH', '/v1/models/good', { body: { sql: 'select 2 as id' } });
  t.equal(renamed.status, 200, 'a valid change is saved');
  // ?validate=false skips the check
  const skipped = await h.request('PATCH', '/v1/models/good?validate=false', { body: { primaryKey: 'unchecked' } });
  t.equal(skipped.status, 200);

  // An unreachable source is a 4xx with a connector code, not a 500.
  const down = await ok(h.request('POST', '/v1/connections', { body: pgConnection('down', { config: { host: '127.0.0.1', port: 1, database: 'x', user: 'x' } }) }));
  const unreachable = await h.request('POST', '/v1/models', { body: modelBody('unreachable', down.id) });
  t.ok(unreachable.status >= 400 && unreachable.status < 500, `unreachable source: ${unreachable.status} ${unreachable.body?.code}`);
  t.equal(await modelCount(), 1);
});
