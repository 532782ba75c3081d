import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import t from 'tap';
import { freePort } from '../../src/db/embedded.ts';
import { freshDatabase } from '../helpers/backhaul.ts';

// SIGTERM runs Backhaul's own graceful shutdown and exits 0, with an external database too
// (a library's exit hook used to exit 143 before the worker could checkpoint).

t.test('serve with DATABASE_URL: SIGTERM shuts down gracefully and exits 0', async (t) => {
  const url = await freshDatabase(t);
  const port = await freePort();
  const child = spawn(process.execPath, ['src/cli.ts', 'serve'], {
    env: { ...process.env, DATABASE_URL: url, BACKHAUL_ENCRYPTION_KEY: randomBytes(32).toString('base64'), PORT: String(port), LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const exited = new Promise<{ code: number | null; signal: string | null }>((r) => child.once('exit', (code, signal) => r({ code, signal })));
  const deadline = Date.now() + 30_000;
  while (!/Backhaul API listening/.test(out) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  const ready = await fetch(`http://127.0.0.1:${port}/readyz`);
  t.equal(ready.status, 200);
  child.kill('SIGTERM');
  t.same(await exited, { code: 0, signal: null });
  t.match(out, /shutting down/);
});
