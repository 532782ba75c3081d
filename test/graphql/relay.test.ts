import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { getNamedType, isNonNullType, isObjectType, parse, print, visit, type GraphQLField, type GraphQLNamedType } from 'graphql';
import { baseSchema, graphqlSdl } from '../../src/graphql/schema.ts';

// relay-compiler (the real one: its npm package ships the compiler binary) accepts @connection on
// every list of the schema (issue 16, item 8): every field whose type has `edges` and `pageInfo`
// gets a fragment with @connection, and the whole set compiles. A negative control shows the
// compiler does refuse a PageInfo without Relay's fields.

const require = createRequire(import.meta.url);
const compilerBin = join(dirname(require.resolve('relay-compiler/package.json')), 'cli.js');

function isConnection(type: GraphQLNamedType): boolean {
  if (!isObjectType(type)) return false;
  const f = type.getFields();
  return Boolean(f.edges && f.pageInfo);
}

function literal(field: GraphQLField<unknown, unknown>): string {
  const required = field.args.filter((a) => isNonNullType(a.type) && a.defaultValue === undefined);
  const args = required.map((a) => `${a.name}: ${getNamedType(a.type).name === 'Int' ? 1 : '"x"'}`);
  return [...args, 'first: 10'].join(', ');
}

/** One fragment per connection field of the schema, each with @connection. */
function fragments(): { names: string[]; source: string } {
  const names: string[] = [];
  const parts: string[] = [];
  const schema = baseSchema();
  for (const type of Object.values(schema.getTypeMap())) {
    if (!isObjectType(type) || type.name.startsWith('__') || type.name === 'Mutation' || type.name === 'Subscription') continue;
    for (const field of Object.values(type.getFields())) {
      if (!isConnection(getNamedType(field.type))) continue;
      const name = `Connections_${type.name}_${field.name}`;
      names.push(`${type.name}.${field.name}`);
      parts.push(
        `export const ${name} = graphql\`fragment ${name} on ${type.name} { ${field.name}(${literal(field)}) @connection(key: "Connections${type.name}_${field.name}") { edges { node { __typename } } } }\`;`,
      );
    }
  }
  return { names, source: `import { graphql } from 'relay-runtime';\n${parts.join('\n')}\n` };
}

function compile(dir: string): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [compilerBin], { cwd: dir, timeout: 120_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, output: `${stdout}${stderr}` });
    });
  });
}

function project(sdl: string, source: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'bh-relay-'));
  mkdirSync(join(dir, 'src', '__generated__'), { recursive: true });
  writeFileSync(join(dir, 'schema.graphql'), sdl);
  writeFileSync(join(dir, 'src', 'Connections.ts'), source);
  writeFileSync(
    join(dir, 'relay.config.json'),
    JSON.stringify({ src: './src', schema: './schema.graphql', language: 'typescript', artifactDirectory: './src/__generated__', customScalarTypes: { JSON: 'unknown', DateTime: 'string' } }),
  );
  return dir;
}

t.test('relay-compiler accepts @connection on every list', async (t) => {
  const { names, source } = fragments();
  for (const expected of ['Query.syncs', 'Query.connections', 'Query.connectorConnection', 'Sync.runs', 'Sync.recordHistory', 'Sync.mappingConnection', 'Run.records', 'Run.deliveries', 'Model.syncs', 'Query.sequences', 'Sequence.runs']) {
    t.ok(names.includes(expected), `${expected} is a connection`);
  }
  const dir = project(graphqlSdl(), source);
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const r = await compile(dir);
  t.equal(r.code, 0, `relay-compiler compiled ${names.length} @connection fragments:\n${r.output}`);
  const artifacts = readdirSync(join(dir, 'src', '__generated__'));
  t.equal(artifacts.filter((f) => f.endsWith('.graphql.ts')).length, names.length, 'one artifact per fragment');

  // Negative control: without Relay's PageInfo fields the compiler refuses @connection.
  const oldSdl = print(
    visit(parse(graphqlSdl()), {
      FieldDefinition: (node, _key, _parent, _path, ancestors) => {
        const owner = ancestors[ancestors.length - 1] as { name?: { value: string } };
        return owner?.name?.value === 'PageInfo' && ['hasPreviousPage', 'startCursor'].includes(node.name.value) ? null : undefined;
      },
    }),
  );
  t.notMatch(oldSdl, /hasPreviousPage|startCursor/, 'the control schema lacks them');
  const bad = project(oldSdl, source);
  t.teardown(() => rmSync(bad, { recursive: true, force: true }));
  const refused = await compile(bad);
  t.not(refused.code, 0, 'the compiler refuses a PageInfo without hasPreviousPage/startCursor');
  t.match(refused.output, /hasPreviousPage|startCursor|PageInfo/);
});
