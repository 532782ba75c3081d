import t from 'tap';
import fc from 'fast-check';
import { GroupCommit } from '../../src/lib/group-commit.ts';

// GroupCommit under any interleaving of submissions and write durations: writes never overlap;
// every item is written exactly once, in submission order across writes; an item submitted while
// a write is in flight waits for the next write (coalesced with the others that waited) rather
// than starting its own; each `add` settles only after the write that carried it, rejecting with
// that write's error and nothing else's; `idle` resolves only once nothing is queued or writing.

const tick = (n: number) => new Promise<void>((resolve) => (n ? setTimeout(resolve, n) : setImmediate(resolve)));

t.test('property: serial writes, order, coalescing, settlement', async (t) => {
  const step = fc.record({ pause: fc.integer({ min: 0, max: 2 }), burst: fc.integer({ min: 1, max: 4 }) });
  await fc.assert(
    fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 10 }), fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 12, maxLength: 12 }), fc.array(fc.boolean(), { minLength: 12, maxLength: 12 }), async (steps, writeDelays, writeFails) => {
      const violations: string[] = [];
      const writes: number[][] = [];
      let writing = false;
      let next = 0;
      const gc = new GroupCommit<number>(async (items) => {
        if (writing) violations.push('two writes at once');
        writing = true;
        const w = writes.length;
        writes.push(items);
        await tick(writeDelays[w % writeDelays.length]);
        writing = false;
        if (writeFails[w % writeFails.length]) throw new Error(`write ${w}`);
      });
      /** Per item: the write that carried it (index) when it settled, and how. */
      const settled = new Map<number, { ok: boolean; error?: string; writesAtSettle: number; writingAtSettle: boolean }>();
      const adds: Promise<void>[] = [];
      /** Per item: whether a write was in flight when it was submitted. */
      const submittedDuringWrite = new Map<number, number>();
      for (const s of steps) {
        for (let i = 0; i < s.burst; i++) {
          const item = next++;
          if (writing) submittedDuringWrite.set(item, writes.length - 1);
          adds.push(
            gc.add(item).then(
              () => void settled.set(item, { ok: true, writesAtSettle: writes.length, writingAtSettle: writing }),
              (e: Error) => void settled.set(item, { ok: false, error: e.message, writesAtSettle: writes.length, writingAtSettle: writing }),
            ),
          );
        }
        await tick(s.pause);
      }
      await gc.idle();
      if (writing) violations.push('idle resolved during a write');
      if (settled.size !== next) violations.push(`idle resolved with ${next - settled.size} items unsettled`);
      await Promise.all(adds);
      t.same(violations, [], 'no violation');
      t.same(writes.flat(), Array.from({ length: next }, (_, i) => i), 'each item written once, in submission order');
      writes.forEach((items, w) => {
        for (const item of items) {
          const st = settled.get(item)!;
          const failed = writeFails[w % writeFails.length];
          if (st.ok === failed || (failed && st.error !== `write ${w}`)) violations.push(`item ${item} settled ${st.ok ? 'ok' : st.error} after write ${w}`);
          // Submitted during write v: carried by the write right after it, never by v itself.
          const during = submittedDuringWrite.get(item);
          if (during !== undefined && w !== during + 1) violations.push(`item ${item} submitted during write ${during} went in write ${w}`);
        }
      });
      t.same(violations, [], 'each add settles with the write that carried it; items submitted during a write wait for the next one');
    }),
    { numRuns: 150 },
  );
});

t.test('an item added after idle() starts a new write', async (t) => {
  const writes: string[][] = [];
  const gc = new GroupCommit<string>(async (items) => void writes.push(items));
  await gc.add('a');
  await gc.idle();
  await gc.add('b');
  t.same(writes, [['a'], ['b']]);
});
