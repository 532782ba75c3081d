import t from 'tap';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

// Every way Backhaul is launched passes the same V8 young-generation limit (see bin/backhaul.js):
// without it an idle worker holds ~300 MB of RSS on a large machine instead of ~150 MB.
const root = fileURLToPath(new URL('..', import.meta.url));
const FLAG = '--max-semi-space-size=8';

t.test('package.json scripts, the bin launcher and the image pass the heap flag', async (t) => {
  const pkg = JSON.parse(readFileSync(`${root}/package.json`, 'utf8'));
  t.match(pkg.scripts.start, new RegExp(`^node ${FLAG} src/cli\\.ts serve$`), 'npm start');
  t.match(pkg.scripts.backhaul, new RegExp(`^node ${FLAG} src/cli\\.ts$`), 'npm run backhaul');
  t.equal(readFileSync(`${root}/bin/backhaul.js`, 'utf8').split('\n')[0], `#!/usr/bin/env -S node ${FLAG}`, 'bin shebang');
  t.match(readFileSync(`${root}/Dockerfile`, 'utf8'), `ENTRYPOINT ["node", "${FLAG}", "bin/backhaul.js"]`, 'image entrypoint');
});

t.test('the bin launcher starts through its shebang (env -S splits the flag from node)', async (t) => {
  // --help exits before touching a database.
  const out = execFileSync(`${root}/bin/backhaul.js`, ['--help'], { encoding: 'utf8', env: { ...process.env, PATH: `${process.execPath.replace(/\/node$/, '')}:${process.env.PATH}` } });
  t.match(out, /Usage: backhaul <command>/);
});
