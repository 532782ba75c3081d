import t from 'tap';
import fc from 'fast-check';
import { ScanQueue } from '../../src/engine/scan-queue.ts';

// While an incremental run's snapshot index loads, its key scan's chunks wait in a ScanQueue
// (query.ts). Every chunk must reach the comparison exactly once and in order, wherever the
// index finishes loading and whatever the queue's bound: a chunk processed twice reads its rows
// again and counts them twice (found at a million rows, where the 32 MB queue filled before the
// index loaded and the chunk that filled it was compared twice: 1,327 rows re-read per run).

const RUNS = Number(process.env.PROPERTY_RUNS ?? 300);

t.test('every chunk comes out once, in order, held only while the index loads and within the bound', async (t) => {
  fc.assert(
    fc.property(
      fc.array(fc.integer({ min: 0, max: 64 }), { maxLength: 40 }),
      fc.integer({ min: 0, max: 41 }),
      fc.integer({ min: 0, max: 200 }),
      (sizes, loadedAfter, maxBytes) => {
        const q = new ScanQueue(maxBytes);
        const offered: Buffer[] = sizes.map((n, i) => Buffer.alloc(n, i % 256));
        const out: Buffer[] = [];
        offered.forEach((chunk, i) => {
          const hold = i < loadedAfter;
          const before = q.bytes;
          const ready = q.offer(chunk, hold);
          if (hold && before + chunk.length < maxBytes) {
            if (ready.length !== 0 || q.bytes !== before + chunk.length) throw new Error(`chunk ${i} released below the bound`);
          } else if (q.bytes !== 0) throw new Error(`chunk ${i}: ${q.bytes} bytes left held`);
          if (q.bytes >= Math.max(maxBytes, 1) && q.bytes > chunk.length) throw new Error('held past the bound');
          out.push(...ready);
        });
        out.push(...q.offer(undefined, offered.length < loadedAfter));
        if (out.length !== offered.length || out.some((c, i) => c !== offered[i])) {
          throw new Error(`chunks out ${out.length} of ${offered.length}, or out of order`);
        }
      },
    ),
    { numRuns: RUNS },
  );
  t.pass(`${RUNS} chunk sequences`);
});
