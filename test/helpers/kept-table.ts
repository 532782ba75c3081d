import type { Sql } from '../../src/db/client.ts';
import type { RunExecutor } from '../../src/engine/executor.ts';
import { FingerprintIndex, LineSplitter } from '../../src/engine/fingerprint-index.ts';
import { resumeAfterCopy } from '../../src/lib/copy-out.ts';

/**
 * The comparison table `executor` kept for the sync (after its refreshes settle) and one loaded
 * from the sync's snapshot now, as comparable text (records and pairs with their flags);
 * undefined when the executor kept none.
 */
export async function keptAndFresh(sql: Sql, executor: RunExecutor, syncId: string): Promise<{ kept: string; fresh: string } | undefined> {
  await executor.fingerprintCache.settled();
  const kept = executor.fingerprintCache.peek(syncId);
  if (!kept) return undefined;
  const fresh = new FingerprintIndex();
  const conn = await sql.reserve();
  try {
    const stream = await conn.unsafe(`copy (select primary_key, source_fp from sync_snapshots where sync_id = '${syncId.replace(/'/g, "''")}') to stdout`).readable();
    const splitter = new LineSplitter((buf, start, end) => void fresh.addLine(buf, start, end));
    for await (const chunk of stream as AsyncIterable<Buffer>) splitter.push(chunk);
    resumeAfterCopy(stream);
  } finally {
    conn.release();
  }
  const text = (i: FingerprintIndex) => JSON.stringify({ records: i.records, pairs: i.contents() });
  return { kept: text(kept), fresh: text(fresh) };
}
