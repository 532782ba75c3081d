import t from 'tap';
import fc from 'fast-check';
import { ChangedRows } from '../../src/engine/changed-rows.ts';
import type { Row } from '../../src/connectors/types.ts';

// ChangedRows under any interleaving of fetch and stage completions: batches are staged in the
// order pushed, each with the rows of its own keys; a fetch is sent only once the previous fetch
// returned and the batch before the previous one was staged (so at most two batches of rows are
// held); after the first failure nothing more is fetched or staged and `end` rejects with it.

const tick = (n: number) => new Promise<void>((resolve) => (n ? setTimeout(resolve, n) : setImmediate(resolve)));

t.test('property: order, bounded look-ahead and the first failure', async (t) => {
  const batch = fc.record({
    keys: fc.uniqueArray(fc.integer({ min: 0, max: 50 }).map(String), { minLength: 1, maxLength: 5 }),
    fetchDelay: fc.integer({ min: 0, max: 3 }),
    stageDelay: fc.integer({ min: 0, max: 3 }),
    fetchFails: fc.boolean(),
    stageFails: fc.boolean(),
  });
  await fc.assert(
    fc.asyncProperty(fc.array(batch, { minLength: 1, maxLength: 8 }), fc.array(fc.integer({ min: 0, max: 2 }), { minLength: 8, maxLength: 8 }), fc.boolean(), fc.double({ min: 0, max: 1, noNaN: true }), async (batches, pauses, withRoom, failShare) => {
      const failing = batches.map((b, i) => ({ ...b, fetchFails: b.fetchFails && i / batches.length > failShare, stageFails: b.stageFails && i / batches.length > failShare }));
      // Violations seen inside the callbacks (a throw there would only read as a failure of the read).
      const violations: string[] = [];
      const fetched: number[] = [];
      const staged: number[] = [];
      let fetching = 0;
      let failure: Error | undefined;
      const rows = new ChangedRows(
        async (keys) => {
          const i = Number(keys[0].split(':')[0]);
          fetching++;
          if (fetching > 1) violations.push('two fetches at once');
          // Sent only after the batch two before was staged.
          if (i >= 2 && !staged.includes(i - 2)) violations.push(`fetch ${i} sent before batch ${i - 2} was staged`);
          if (failure) violations.push(`fetch ${i} sent after a failure`);
          await tick(failing[i].fetchDelay);
          fetching--;
          fetched.push(i);
          if (failing[i].fetchFails) {
            failure ??= new Error(`fetch ${i} failed`);
            throw new Error(`fetch ${i} failed`);
          }
          return keys.map((k): Row => ({ id: k, batch: i }));
        },
        async (got, wanted) => {
          const i = got.length ? (got[0].batch as number) : -1;
          if (failure) violations.push(`batch ${i} staged after a failure`);
          else if (i !== staged.length) violations.push(`batch ${i} staged out of order (after ${staged.length} batches)`);
          else if ([...wanted].join(',') !== failing[i].keys.map((k) => `${i}:${k}`).join(',')) violations.push(`batch ${i} staged with other keys`);
          await tick(failing[i].stageDelay);
          if (failing[i].stageFails) {
            failure ??= new Error(`stage ${i} failed`);
            throw new Error(`stage ${i} failed`);
          }
          staged.push(i);
        },
      );
      for (let i = 0; i < failing.length; i++) {
        if (withRoom) await rows.room().catch(() => {});
        rows.push(failing[i].keys.map((k) => `${i}:${k}`));
        await tick(pauses[i]);
      }
      const outcome = await rows.end().then(
        () => undefined,
        (e: Error) => e,
      );
      if (failure) {
        if (outcome?.message !== failure.message) throw new Error(`end gave ${outcome?.message}, the first failure was ${failure.message}`);
      } else {
        if (outcome) throw outcome;
        if (staged.join() !== failing.map((_, i) => i).join()) throw new Error(`staged ${staged.join()}`);
      }
      if (violations.length) throw new Error(violations.join('; '));
    }),
    { numRuns: 300 },
  );
  t.pass('batches are staged in order, fetched one ahead, and stop at the first failure');
});

t.test('cancel: nothing more is fetched, what is in flight settles, end rejects', async (t) => {
  let fetches = 0;
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  const rows = new ChangedRows(
    async (keys) => {
      fetches++;
      await gate;
      return keys.map((k) => ({ id: k }));
    },
    async () => {},
  );
  rows.push(['1']);
  rows.push(['2']);
  await tick(0);
  rows.cancel();
  rows.push(['3']);
  release();
  await t.rejects(rows.end(), /abandoned/);
  t.equal(fetches, 1, 'only the fetch already sent ran');
});
