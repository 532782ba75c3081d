// Runs one of Backhaul's TypeScript entry points (or a tool that loads them, like tap) under a Node
// that strips types: Node >= 22.18 (or 23.6+). Plain JavaScript that older Nodes can parse.
//
//   node bin/launch.js <file> [args…]        (package.json scripts; bin/backhaul.js imports run())
//
// With a supported Node the file runs in this very process. With an older one (many servers still
// have Node 20) a supported Node is found or brought, and the file runs under it as a child with
// the same flags, stdio and exit status:
//   1. BACKHAUL_NODE=/path/to/node, if set;
//   2. the Node fetched earlier into node_modules/.cache/backhaul-node (BACKHAUL_NODE_CACHE moves it);
//   3. on Linux x64/arm64: Node PINNED_NODE fetched once from the npm registry (the node-linux-<arch>
//      package, as .ci/run does), with one line saying so;
// and otherwise the launcher stops at once with one line naming the version needed and the fix.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, renameSync, rmSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

/** The Node fetched when the machine's is too old (kept in step with the Dockerfile's base image). */
export const PINNED_NODE = '24.22.3';
export const NEEDED = '22.18';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** Whether a Node version ("22.18.0", no "v") runs .ts files by itself (type stripping on by default). */
export function stripsTypes(version) {
  const [major, minor] = String(version).split('.').map(Number);
  return major > 23 || (major === 23 && minor >= 6) || (major === 22 && minor >= 18);
}

function fail(reason) {
  process.stderr.write(
    `backhaul: Node ${process.version} is too old: Backhaul needs Node >= ${NEEDED}${reason ? ` (${reason})` : ''}. ` +
      `Install Node ${NEEDED}+ or 24 (https://nodejs.org/en/download), or set BACKHAUL_NODE=/path/to/node.\n`,
  );
  process.exit(1);
}

function versionOf(node) {
  const r = spawnSync(node, ['-p', 'process.versions.node'], { encoding: 'utf8', timeout: 30_000 });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

/** npm itself: the one running this script when there is one (npm start, npx), else npm on the PATH. */
function npmCommand() {
  const cli = process.env.npm_execpath;
  if (cli && /\.c?js$/.test(cli) && existsSync(cli)) return [process.execPath, [cli]];
  return [process.platform === 'win32' ? 'npm.cmd' : 'npm', []];
}

/** Fetches node-linux-<arch>@PINNED_NODE into `cache` (atomically: concurrent launchers keep one copy). */
function fetchNode(cache, binary) {
  const rel = relative(process.cwd(), cache);
  const shown = rel && !rel.startsWith('..') ? rel : cache;
  process.stderr.write(`backhaul: Node ${process.version} is older than ${NEEDED}: fetching Node ${PINNED_NODE} from the npm registry into ${shown} (once)\n`);
  mkdirSync(dirname(cache), { recursive: true });
  const tmp = mkdtempSync(`${cache}.tmp-`);
  const [cmd, pre] = npmCommand();
  const r = spawnSync(
    cmd,
    [...pre, 'install', '--prefix', tmp, '--no-save', '--no-package-lock', '--no-audit', '--no-fund', '--loglevel=error', `node-linux-${process.arch}@${PINNED_NODE}`],
    { encoding: 'utf8', stdio: ['ignore', 'ignore', 'pipe'], shell: process.platform === 'win32', timeout: 600_000 },
  );
  if (r.status !== 0) {
    rmSync(tmp, { recursive: true, force: true });
    const why = (r.error?.message ?? r.stderr ?? '').split('\n').map((l) => l.replace(/^npm error /, '').trim()).filter(Boolean)[0];
    fail(`fetching Node ${PINNED_NODE} failed: ${why ?? `npm exited with ${r.status}`}`);
  }
  try {
    renameSync(tmp, cache);
  } catch {
    rmSync(tmp, { recursive: true, force: true }); // another launcher got there first
  }
  if (!existsSync(binary)) fail(`the fetched Node is not at ${binary}`);
}

/** The path of a Node that strips types, found or fetched as the header says; exits with one line if none. */
export function supportedNode() {
  const given = process.env.BACKHAUL_NODE;
  if (given) {
    const v = versionOf(given);
    if (!v) fail(`BACKHAUL_NODE=${given} does not run`);
    if (!stripsTypes(v)) fail(`BACKHAUL_NODE=${given} is Node ${v}`);
    return given;
  }
  const cache = resolve(process.env.BACKHAUL_NODE_CACHE || join(root, 'node_modules', '.cache', 'backhaul-node'));
  const binary = join(cache, 'node_modules', `node-linux-${process.arch}`, 'bin', 'node');
  if (existsSync(binary) && stripsTypes(versionOf(binary) ?? '0')) return binary;
  if (process.platform !== 'linux' || !['x64', 'arm64'].includes(process.arch)) fail(`no Node ${PINNED_NODE} package for ${process.platform}-${process.arch} on npm`);
  rmSync(cache, { recursive: true, force: true }); // a broken or outdated copy
  fetchNode(cache, binary);
  return binary;
}

/**
 * Applies scripts/patch-postgres.mjs (postgres.js connection-loss guards) before anything loads
 * postgres.js: npm's postinstall does it, but an install with --ignore-scripts skips it (as the
 * embedded PostgreSQL's symlinks are made in src/db/embedded.ts for the same reason). A no-op when
 * already patched; where node_modules is read-only or the script is absent (the Docker image, which
 * patches at build), the server's start-up warning (postgresGuarded) says what is missing.
 */
async function guardPostgres() {
  const script = join(root, 'scripts', 'patch-postgres.mjs');
  if (!existsSync(script)) return;
  try {
    const { applyGuards } = await import(pathToFileURL(script).href);
    applyGuards(root);
  } catch {
    // reported by the server at start (postgresGuarded in src/db/client.ts)
  }
}

/**
 * The V8 old-generation bound of a dedicated worker process (`backhaul worker`), in MB. A run
 * streams (its heap does not grow with the model's size), but on a large machine V8 sizes the old
 * generation from total RAM and lets garbage pile up to ~300 MB of RSS at 1M rows; bounded, the
 * worker's peak stays under 256 MB. Only the worker command gets it: `serve` holds the API too,
 * whose heap is not bounded (a large request must not end it).
 */
export const WORKER_OLD_SPACE_MB = 192;

/**
 * The Node flags `args` (the CLI's arguments) add to this process's: `--max-old-space-size` for the
 * `worker` command, unless a heap size is already set (a Node flag or NODE_OPTIONS: the operator's
 * choice wins). Empty for every other command.
 */
export function commandNodeFlags(args, execArgv = process.execArgv, nodeOptions = process.env.NODE_OPTIONS ?? '') {
  if (args[0] !== 'worker') return [];
  // NODE_OPTIONS may quote its words ("--max-old-space-size=300").
  const words = nodeOptions.split(/\s+/).map((w) => w.replace(/^["']/, ''));
  const set = [...execArgv, ...words].some((f) => /^--max[-_](old[-_]space|heap)[-_]size\b/.test(f));
  return set ? [] : [`--max-old-space-size=${WORKER_OLD_SPACE_MB}`];
}

/**
 * Runs `file` (a path) with `args`: here when this Node strips types, else under supportedNode() as a
 * child with this process's Node flags. The child gets the terminal's signals itself (same process
 * group); signals sent to this process alone are passed on. Its exit status or signal becomes ours.
 * A command with its own Node flags (commandNodeFlags: heap bounds are fixed when V8 starts) replaces
 * this process with a Node started with them (execve: same pid, signals, stdio; no second process).
 */
export async function run(file, args) {
  const entry = resolve(file);
  await guardPostgres();
  const extra = commandNodeFlags(args);
  if (stripsTypes(process.versions.node)) {
    if (extra.length && typeof process.execve === 'function') {
      process.execve(process.execPath, [process.execPath, ...process.execArgv, ...extra, entry, ...args], process.env);
    }
    process.argv = [process.argv[0], entry, ...args];
    await import(pathToFileURL(entry).href);
    return;
  }
  const node = supportedNode();
  const child = spawn(node, [...process.execArgv, ...extra, entry, ...args], { stdio: 'inherit' });
  const pass = (signal) => () => child.kill(signal);
  for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(s, pass(s));
  child.on('error', (e) => fail(`could not start ${node}: ${e.message}`));
  child.on('exit', (code, signal) => {
    if (signal) {
      process.removeAllListeners(signal);
      process.kill(process.pid, signal);
    } else process.exit(code ?? 1);
  });
}

if (process.argv[1] && pathToFileURL(resolve(process.argv[1])).href === import.meta.url) {
  const [file, ...args] = process.argv.slice(2);
  if (!file) {
    process.stderr.write('Usage: node bin/launch.js <file> [args…]\n');
    process.exit(2);
  }
  await run(file, args);
}
