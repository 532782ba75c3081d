// Applied by `npm install` (postinstall), by bin/launch.js at every start (so that an install with
// --ignore-scripts gets them too) and by the Dockerfile at build: guards in postgres.js (porsager/postgres 3.4.x) that keep a
// lost control-database connection from crashing the process. Plain JavaScript so that it runs
// on any Node that npm runs on. Idempotent; exits 0 even when it cannot patch (the server then
// warns at start: postgresGuarded() in src/db/client.ts).
//
// The defects (upstream issues porsager/postgres#1066, #1154, #1208; fixes proposed in #1168, #1209,
// unreleased as of 3.4.9):
//  1. A write smaller than 1 KB is flushed by setImmediate(nextWrite). When the connection closed
//     first, nextWrite calls write on a null socket: an uncaught TypeError ("Cannot read
//     properties of null (reading 'write')") from a timer, which no caller can catch. A
//     transaction interrupted by a lost connection always gets there: sql.begin sends its
//     ROLLBACK on the closed, reserved connection.
//  2. closed() cancels that scheduled flush but keeps its buffer and timer handle, so the next
//     connection on the same slot buffers its startup message behind the dead session's bytes
//     and never flushes it: every reconnect on that slot hangs until connect_timeout.
// The guards: a query executed on a connection without a socket is rejected (CONNECTION_CLOSED);
// a flush without a socket rejects the connection's queries instead of throwing; closed() drops
// the dead session's buffer.

import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const MARK = '/* backhaul-guard */';

const PATCHES = [
  {
    what: 'execute on a closed connection',
    from: "    if (terminated)\n      return queryError(q, Errors.connection('CONNECTION_DESTROYED', options))\n",
    to:
      "    if (terminated)\n      return queryError(q, Errors.connection('CONNECTION_DESTROYED', options))\n\n" +
      `    if (socket === null) ${MARK}\n      return (queryError(q, Errors.connection('CONNECTION_CLOSED', options)), true)\n`,
  },
  {
    what: 'flush without a socket',
    from: '  function nextWrite(fn) {\n    const x = socket.write(chunk, fn)\n',
    to:
      '  function nextWrite(fn) {\n' +
      `    if (socket === null) { ${MARK}\n` +
      '      chunk = nextWriteTimer = null\n' +
      "      const err = Errors.connection('CONNECTION_CLOSED', options)\n" +
      '      fn && process.nextTick(fn, err)\n' +
      '      error(err)\n' +
      '      return false\n' +
      '    }\n' +
      '    const x = socket.write(chunk, fn)\n',
  },
  {
    what: "closed() keeps the dead session's buffer",
    from: '    incomings = null\n    clearImmediate(nextWriteTimer)\n    socket.removeListener(\'data\', data)\n',
    to: `    incomings = null\n    clearImmediate(nextWriteTimer)\n    chunk = nextWriteTimer = null ${MARK}\n    socket.removeListener('data', data)\n`,
  },
];

/** Patches one connection.js; returns 'patched', 'already' or a reason it could not. */
export function patchFile(file) {
  if (!existsSync(file)) return 'missing';
  let text = readFileSync(file, 'utf8');
  if (text.includes(MARK)) return 'already';
  for (const p of PATCHES) {
    if (text.split(p.from).length !== 2) return `unexpected source (${p.what})`;
    text = text.replace(p.from, p.to);
  }
  writeFileSync(file, text);
  return 'patched';
}

/**
 * Applies the guards to node_modules/postgres under `root` (both its ESM and CJS builds). Never
 * throws: returns one line per build it could not patch (a read-only node_modules, e.g. a
 * container's, or a postgres.js whose source changed), empty when patched or already patched.
 */
export function applyGuards(root) {
  const problems = [];
  try {
    const pkgDir = join(root, 'node_modules', 'postgres');
    if (!existsSync(join(pkgDir, 'package.json'))) return problems;
    const { version } = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8'));
    for (const rel of ['src/connection.js', 'cjs/src/connection.js']) {
      let r;
      try {
        r = patchFile(join(pkgDir, rel));
      } catch (e) {
        r = e && e.code ? e.code : String(e);
      }
      if (r !== 'patched' && r !== 'already' && r !== 'missing') {
        problems.push(`backhaul: postgres ${version} ${rel}: ${r}; connection-loss guards not applied (see scripts/patch-postgres.mjs)`);
      }
    }
  } catch (e) {
    problems.push(`backhaul: postgres.js guards not applied: ${e && e.message ? e.message : e}`);
  }
  return problems;
}

function main() {
  const root = join(dirname(fileURLToPath(import.meta.url)), '..');
  for (const line of applyGuards(root)) process.stderr.write(`${line}\n`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) main();
