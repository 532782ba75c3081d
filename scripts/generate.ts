// Generates the committed artifacts from the code: openapi/openapi.json (and, once GraphQL
// exists, openapi/schema.graphql), and checks that drizzle-kit has nothing new to migrate.
// `--check` writes nothing and exits 1 when a committed artifact differs from the code.
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildArtifacts } from './artifacts.ts';

const check = process.argv.includes('--check');
let drift = false;

for (const [file, content] of Object.entries(await buildArtifacts())) {
  const current = existsSync(file) ? readFileSync(file, 'utf8') : '';
  if (current === content) continue;
  if (check) {
    console.error(`drift: ${file} differs from what the code generates (run \`npm run generate\` and commit it)`);
    drift = true;
  } else {
    writeFileSync(file, content);
    console.log(`wrote ${file}`);
  }
}

// Migrations: drizzle-kit must find nothing to generate against a copy of migrations/.
const tmp = mkdtempSync(join(tmpdir(), 'bh-migrations-'));
try {
  cpSync('migrations', tmp, { recursive: true });
  const before = readdirSync(tmp).length;
  execFileSync('npx', ['drizzle-kit', 'generate', '--dialect', 'postgresql', '--schema', './src/db/schema.ts', '--out', tmp], { stdio: 'pipe' });
  if (readdirSync(tmp).length !== before) {
    console.error('drift: src/db/schema.ts has changes with no migration (run `npm run db:generate` and commit migrations/)');
    drift = true;
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}

if (drift) process.exit(1);
if (check) console.log('artifacts match the code');
