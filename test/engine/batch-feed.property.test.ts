import t from 'tap';
import fc from 'fast-check';
import { BatchFeed, type FeedBatch } from '../../src/engine/batch-feed.ts';
import { wireOperation } from '../../src/engine/batch.ts';
import type { PlannedOp, PlanPage } from '../../src/engine/plan.ts';

// The batch feed (src/engine/batch-feed.ts) hands delivery's slots the plan's operations, reading
// pages ahead. Whatever the page and batch sizes, the slots and how they take (waiting or not):
// every operation is handed out once, in plan order; batches are of one wire operation and at most
// the batch size; no delete leaves before deletes are opened, and none before every write was
// handed out; pages are read in keyset order, never more than a page ahead, never after the
// plan's end; a failed read fails every take after it, and nothing is read after it.

const tick = () => new Promise<void>((r) => setImmediate(r));

const planArb = fc
  .record({
    writes: fc.array(fc.constantFrom<'insert' | 'update'>('insert', 'update'), { maxLength: 40 }),
    deletes: fc.nat({ max: 15 }),
    gaps: fc.array(fc.integer({ min: 1, max: 3 }), { minLength: 60, maxLength: 60 }),
  })
  .map(({ writes, deletes, gaps }) => {
    const ops: PlannedOp[] = [];
    let seq = 0;
    for (const op of [...writes, ...Array<'delete'>(deletes).fill('delete')]) {
      seq += gaps[ops.length % gaps.length];
      ops.push({ seq, pk: `k${seq}`, op, payload: '{}', attempts: 0, recordId: null });
    }
    return ops;
  });

t.test('every operation once, in order, in well-formed batches; deletes only once opened; reads keyset, at most a page ahead', async (t) => {
  await fc.assert(
    fc.asyncProperty(
      planArb,
      fc.integer({ min: 1, max: 8 }),
      fc.integer({ min: 1, max: 5 }),
      fc.constantFrom('upsert', 'insert', 'mirror'),
      fc.integer({ min: 1, max: 4 }),
      fc.array(fc.boolean(), { minLength: 50, maxLength: 50 }),
      async (plan, pageSize, batchSize, mode, slots, choices) => {
        const reads: { afterSeq: number; held: number }[] = [];
        let taken: FeedBatch[] = [];
        let handedRows = 0;
        let readRows = 0;
        const feed = new BatchFeed(
          async (afterSeq, limit) => {
            reads.push({ afterSeq, held: readRows - handedRows });
            await tick();
            const ops = plan.filter((o) => o.seq > afterSeq).slice(0, limit);
            readRows += ops.length;
            return { run: 'running', ops } satisfies PlanPage;
          },
          { pageSize, batchSize, mode, onPage: () => {}, readAhead: () => true },
        );
        // Batches in the order the feed hands them out (take hands out through takeReady).
        const handOut = feed.takeReady.bind(feed);
        feed.takeReady = (deletes) => {
          const b = handOut(deletes);
          if (b) {
            taken.push(b);
            handedRows += b.ops.length;
          }
          return b;
        };
        let c = 0;
        const slot = async (deletes: boolean) => {
          for (;;) {
            // Either wait for a batch, or take one only if it is ready (as a slot's checkpoint does).
            const b = choices[c++ % choices.length] ? feed.takeReady(deletes) : await feed.take(deletes);
            if (b === undefined && !(await feed.take(deletes))) return;
            await tick();
          }
        };
        await Promise.all(Array.from({ length: slots }, () => slot(false)));
        const writesPhase = taken;
        taken = [];
        await Promise.all(Array.from({ length: slots }, () => slot(true)));
        const all = [...writesPhase, ...taken];

        t.notOk(writesPhase.some((b) => b.operation === 'delete'), 'no delete before deletes are opened');
        t.ok(writesPhase.flatMap((b) => b.ops).length === plan.filter((o) => o.op !== 'delete').length, 'every write handed out before the deletes');
        t.same(all.flatMap((b) => b.ops.map((o) => o.seq)), plan.map((o) => o.seq), 'every operation once, in plan order');
        for (const b of all) {
          if (!(b.ops.length >= 1 && b.ops.length <= batchSize && b.ops.every((o) => wireOperation(mode, o.op) === b.operation))) {
            t.fail(`malformed batch ${JSON.stringify(b)}`);
          }
        }
        // Keyset: each read starts after the last operation of the page before it.
        let last = 0;
        for (const r of reads) {
          if (r.afterSeq !== last) t.fail(`read after ${r.afterSeq}, expected after ${last}`);
          const page = plan.filter((o) => o.seq > r.afterSeq).slice(0, pageSize);
          last = page.length ? page[page.length - 1].seq : last;
          // (The batch being taken when a read starts is counted as held: it is handed out just after.)
          if (r.held >= pageSize + batchSize) t.fail(`a page read while ${r.held} rows were held (page ${pageSize})`);
        }
        const pagesNeeded = Math.floor(plan.length / pageSize) + 1;
        t.equal(reads.length, pagesNeeded, 'no read after the short page that ends the plan');
      },
    ),
    { numRuns: 300 },
  );
});

t.test('a failed page read fails every take after it and stops reading', async (t) => {
  await fc.assert(
    fc.asyncProperty(planArb, fc.integer({ min: 1, max: 6 }), fc.nat({ max: 6 }), async (plan, pageSize, failAt) => {
      let reads = 0;
      const boom = new Error('plan lost');
      const feed = new BatchFeed(
        async (afterSeq, limit) => {
          if (reads++ === failAt) throw boom;
          await tick();
          return { run: 'running', ops: plan.filter((o) => o.seq > afterSeq).slice(0, limit) };
        },
        { pageSize, batchSize: 2, mode: 'upsert', onPage: () => {}, readAhead: () => true },
      );
      const got: number[] = [];
      let error: unknown;
      try {
        for (;;) {
          const b = await feed.take(true);
          if (!b) break;
          got.push(...b.ops.map((o) => o.seq));
        }
      } catch (e) {
        error = e;
      }
      const pages = Math.floor(plan.length / pageSize) + 1;
      if (failAt < pages) {
        t.equal(error, boom, 'the read error reaches the take');
        t.same(got, plan.slice(0, got.length).map((o) => o.seq), 'what was handed out before it is the plan in order');
        t.equal(await feed.take(true).then(() => undefined, (e: unknown) => e), boom, 'and every take after it');
        t.equal(reads, failAt + 1, 'nothing is read after the failure');
      } else {
        t.equal(error, undefined);
        t.same(got, plan.map((o) => o.seq));
      }
    }),
    { numRuns: 200 },
  );
});

t.test('onPage sees every page before its batches are handed out, and can stop the feed', async (t) => {
  const plan = Array.from({ length: 10 }, (_, i): PlannedOp => ({ seq: i + 1, pk: `k${i}`, op: 'insert', payload: '{}', attempts: 0, recordId: null }));
  let pages = 0;
  const feed = new BatchFeed(async (afterSeq, limit) => ({ run: pages === 1 ? 'gone' : 'running', ops: plan.filter((o) => o.seq > afterSeq).slice(0, limit) }), {
    pageSize: 4,
    batchSize: 4,
    mode: 'upsert',
    onPage: (p) => {
      pages++;
      if (p.run === 'gone') throw new Error('sync deleted');
    },
    readAhead: () => true,
  });
  const first = await feed.take(false);
  t.same(first?.ops.map((o) => o.seq), [1, 2, 3, 4]);
  const second = await feed.take(false).then(() => undefined, (e: unknown) => (e as Error).message);
  t.equal(second, 'sync deleted', 'the page that said the sync is gone hands out nothing');
});
