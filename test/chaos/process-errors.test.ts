import t from 'tap';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { spawnBackhaul, until } from './spawned.ts';

// What a `backhaul serve` process does with an error nothing caught (installProcessHandlers in
// src/server.ts): a rejection caused by a lost database connection is logged and it keeps
// serving; any other unhandled rejection, and every uncaught exception, shuts it down
// gracefully (its shutdown line is logged) and it exits 1 for its supervisor to restart it.

const inject = new URL('./fixtures/inject-error.mjs', import.meta.url).pathname;

t.test('errors nothing caught', async (t) => {
  const h = await startTestBackhaul(t);
  for (const [what, survives] of [
    ['connection-rejection', true],
    ['rejection', false],
    ['uncaught', false],
  ] as const) {
    await t.test(what, async (t) => {
      const bh = await spawnBackhaul(h, 'serve', { nodeArgs: ['--import', inject], env: { BACKHAUL_TEST_INJECT: what } });
      t.teardown(() => bh.kill9());
      await until('the server to be ready', async () => (await bh.request('GET', '/readyz', { token: null })).status === 200);
      const at = bh.lines.length;
      bh.child.kill('SIGUSR2');
      await bh.waitForLine(new RegExp(`injecting ${what}`), 60_000);
      if (survives) {
        await bh.waitForLine(/unhandled rejection: control database connection lost/, 60_000, at);
        t.equal((await bh.request('GET', '/readyz', { token: null })).status, 200, 'it logged the rejection and keeps serving');
        t.equal(bh.exit, undefined);
        await bh.stop();
        t.equal(bh.exit?.code, 0, 'and stops normally');
      } else {
        const exit = await bh.exited;
        t.equal(exit.code, 1, `it exits 1 (${JSON.stringify(exit)})`);
        t.ok(bh.lines.slice(at).some((l) => /"level":60/.test(l) && /shutting down/.test(l)), 'after logging the error and shutting down');
        t.notOk(bh.lines.slice(at).some((l) => /shutdown after an unhandled error timed out/.test(l)), 'gracefully, within its shutdown timeout');
      }
    });
  }
});
