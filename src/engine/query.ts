import { hash } from 'node:crypto';
import { once } from 'node:events';
import type { Writable } from 'node:stream';
import { compileMappings, type MappingSpec } from '../connectors/mapping.ts';
import { FINGERPRINT_COLUMN, FingerprintUnsupported, type Column, type DestinationConnector, type DestinationField, type FingerprintSession, type Row, type SourceConnector } from '../connectors/types.ts';
import type { Sql } from '../db/client.ts';
import { ConnectorError } from '../errors.ts';
import { stringifyPayload } from '../lib/json.ts';
import { abortable, raceAbort } from './abort.ts';
import { ChangedRows } from './changed-rows.ts';
import { fewStaged, StagedRecordsCopy } from './diff.ts';
import { loadTable } from './fingerprint-cache.ts';
import { FINGERPRINT_INDEX_MAX, FingerprintIndex, LineSplitter } from './fingerprint-index.ts';
import { equalityOf, matchKeyOf, mayBeUnrecordable, unrecordablePath } from './identity.ts';
import { LookupResolver } from './lookups.ts';
import { recordInvalid, type InvalidRow } from './records.ts';
import { ScanQueue } from './scan-queue.ts';
import { analyzeStaging, createStaging, markStagingIntact, STAGING_SCHEMA, stagingNames, StagingWriter, type StagedDistinct } from './staging.ts';
import type { RunCounts } from './status.ts';

// Querying: read the model from the source, map each row, and COPY (pk, hash, payload, match
// value, match key, fingerprint) into the run's staging table. Memory stays flat. Everything that
// would make a row unsendable or unrecordable is found here, before anything is sent: a missing
// primary key, a mapping error, a missing match value, text the control database cannot store.
// Such rows are invalid (recorded with their reason) and staged as claims only.
//
// Two ways to read (DESIGN §3, issue 17):
// - full: every row, through the source's cursor. SQL sources also compute each row's source
//   fingerprint in the same query (a hash of the whole row, by the database), kept in the snapshot.
// - incremental (SQL sources, when the snapshot holds fingerprints of the current evaluation
//   version and the run is no full resync): one scan of (primary key, fingerprint) for every row,
//   copied into keys_<run> (the fingerprint prefixed by the version, as the snapshot keeps it); the keys whose fingerprint matches no snapshot record of that row
//   (new, changed, duplicated) are then read in full by key, in batches, within the same read-only
//   snapshot transaction, and only those are mapped and staged. Unchanged rows still claim their
//   records (diff.ts reads keys_<run>). Deleted keys need nothing.
// The evaluation version hashes everything a payload depends on besides the row: the model's SQL
// and primary key, the mappings, the match key, the mapped destination fields and the fingerprint
// function. Changing any of them, or a full resync, reads and re-evaluates every row. What a row's
// payload takes from outside the row — lookup results, the time — is refreshed by a full resync only.

const PAYLOAD_HASH = (s: string) => hash('sha1', s, 'base64url');
/** Bumped when mapping evaluation itself changes what a row maps to. */
const ENGINE_EVALUATION = 1;
/** Keys per fetch of full rows in an incremental run. */
const FETCH_BATCH = 1000;
/**
 * Changed keys whose rows are fetched while the key scan still runs (a session that can): their
 * invalid rows wait in memory for the scan's end (a run that then gives up for a full read must
 * leave no record of them), and a give-up wastes their fetches, so they are bounded.
 */
const DURING_SCAN_KEYS = 20 * FETCH_BATCH;

export interface QueryInput {
  sql: Sql;
  run: { id: string; workspaceId: string; syncId: string };
  model: { sql: string; primaryKey: string };
  matchKey: { sourceColumn: string; destinationField: string };
  mappings: MappingSpec[];
  fields: DestinationField[];
  source: SourceConnector;
  /** The destination, for lookup mappings (resolved per source batch before mapping, cached for the run). */
  dest?: DestinationConnector;
  counts: RunCounts;
  readBatchSize: number;
  /** Snapshot records up to which the key scan is compared in memory (default FINGERPRINT_INDEX_MAX; 0: in SQL). */
  keyIndexMax?: number;
  /** Re-evaluate every row (the snapshot's fingerprints are not consulted). */
  fullResync?: boolean;
  /** Key-scan bytes held while the snapshot's fingerprint index loads (default SCAN_QUEUE_BYTES; tests). */
  scanQueueBytes?: number;
  /** Aborted on cancel, shutdown or the run's deadline: the read stops at once. */
  signal: AbortSignal;
  /**
   * The worker's kept table of the sync (fingerprint-cache.ts): `take` gives it when it is still
   * the snapshot (instead of loading it), `compared` receives the table the comparison used.
   */
  fingerprintTable?: { take: () => Promise<FingerprintIndex | undefined>; compared: (index: FingerprintIndex) => void };
}

/** How the querying phase read the model. */
export interface QueryStats {
  /** Read by key scan and fetch of changed rows (else every row in full). */
  incremental: boolean;
  /** Rows whose (key, fingerprint) the key scan read (incremental runs). */
  keysScanned: number;
  /** Full rows read from the source and mapped. */
  rowsFetched: number;
  /** Keys the scan found that the fetch no longer did (the model changed in between; reconsidered next run). */
  vanished: number;
  /** Where the key scan was compared with the snapshot (incremental runs): in memory or in SQL. */
  comparison?: 'memory' | 'sql';
  /** The in-memory comparison used the table this worker kept from the sync's last run (nothing loaded). */
  keptTable?: boolean;
  /**
   * The sync's snapshot records when the run began, when the comparison ran in memory (it read
   * them all); the base of the change thresholds, which then need no count.
   */
  snapshotRecords?: number;
  /** The evaluation version rows were fingerprinted under (absent when the source cannot fingerprint). */
  version?: string;
  /** Why an incremental read was not used or given up (absent when it was used or not tried). */
  fullReason?: string;
  /** rec_<run> was built while the rows were staged (diff.ts, StagedRecordsCopy): markDuplicates need not. */
  recordsCopied?: boolean;
  /** What the staging writer proved of every staged row (no duplicated primary or match key): markDuplicates need not look. */
  distinct?: StagedDistinct;
}

/**
 * The evaluation version: a hash of what a row's payload depends on besides the row itself
 * (lowercase hex, 16 characters). See the header comment.
 */
export function evaluationVersion(q: Pick<QueryInput, 'model' | 'matchKey' | 'fields'>, mappings: MappingSpec[], method: string): string {
  const mapped = new Set(mappings.map((m) => m.destinationField));
  const fields = q.fields.filter((f) => mapped.has(f.name)).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const basis = JSON.stringify([ENGINE_EVALUATION, method, q.model.sql, q.model.primaryKey, q.matchKey, mappings, fields]);
  return hash('sha1', basis, 'hex').slice(0, 16);
}

/**
 * Runs the querying phase; counts.queried and counts.invalid are set from scratch. Its staged
 * tables are marked intact at the end (markStagingIntact), not before: a phase cut short leaves
 * none that a resumed run would trust.
 */
export async function queryPhase(q: QueryInput): Promise<QueryStats> {
  const mappings = [...q.mappings];
  const matchField = q.matchKey.destinationField;
  if (!mappings.some((m) => m.destinationField === matchField)) {
    mappings.push({ destinationField: matchField, source: { column: q.matchKey.sourceColumn } });
  }
  const columns = await raceAbort(q.source.columns(q.model.sql), q.signal);
  const colNames = columns.map((c) => c.name);
  if (!colNames.includes(q.model.primaryKey)) {
    throw new ConnectorError('primary_key_not_found', `The model's query returns no column "${q.model.primaryKey}".`, { classification: 'fatal', hint: "Fix the model's primaryKey or its SQL." });
  }
  const lookups = q.dest ? new LookupResolver(mappings, q.dest, { signal: q.signal }) : undefined;
  const map = compileMappings(mappings, q.fields, { columns: colNames, ...(lookups?.active ? { lookup: lookups.resolve } : {}) });
  const equality = equalityOf(q.fields, matchField);
  const method = q.source.fingerprintMethod?.(columns);
  const version = method ? evaluationVersion(q, mappings, method) : undefined;

  const { counts } = q;
  counts.queried = 0;
  counts.invalid = 0;
  const stats: QueryStats = { incremental: false, keysScanned: 0, rowsFetched: 0, vanished: 0, ...(version ? { version } : {}) };
  const invalid: InvalidRow[] = [];

  /** Maps and stages one row (row number `n` names a row without a key); `valid` hears the match key of a valid row. */
  const stageRow = (writer: StagingWriter, row: Row, n: number, valid?: (mkey: string) => void): Promise<void> | undefined => {
    const stageInvalid = (pk: string, code: string, message: string, mkey: string | null = null) => {
      counts.invalid++;
      invalid.push({ pk, code, message });
      return writer.write(pk, null, null, 'i', null, mkey);
    };
    let fp: string | null = null;
    if (FINGERPRINT_COLUMN in row) {
      const f = row[FINGERPRINT_COLUMN];
      fp = f === null || f === undefined ? null : `${version}:${f}`;
      // Cleared, not deleted: a deleted property turns every row into a slow dictionary object
      // (a fifth of this function's time at 1M rows). No mapping can read it (not a model column).
      row[FINGERPRINT_COLUMN] = undefined;
    }
    const pkValue = row[q.model.primaryKey];
    if (pkValue === null || pkValue === undefined || pkValue === '') {
      counts.invalid++;
      invalid.push({ pk: `(row ${n})`, code: 'missing_primary_key', message: `Row ${n} has no value in primary-key column "${q.model.primaryKey}".` });
      return undefined;
    }
    let pk = typeof pkValue === 'object' ? JSON.stringify(pkValue) : String(pkValue);
    if (unrecordablePath(pk)) {
      // The key itself cannot be stored: record the row under an escaped form of it.
      pk = JSON.stringify(pk).slice(1, -1).replace(/\\u0000/g, '\\\\u0000');
      counts.invalid++;
      invalid.push({ pk: `(row ${n})`, code: 'unrecordable_value', message: `Row ${n}'s primary key ${pk.slice(0, 100)} holds a NUL character or a lone surrogate, which cannot be recorded.` });
      return undefined;
    }
    const mapped = map(row);
    if (!mapped.ok) return stageInvalid(pk, mapped.code, mapped.message, matchKeyOf(row[q.matchKey.sourceColumn], equality));
    const payload = stringifyPayload(mapped.payload);
    // The walk over the payload only when its JSON text holds an escape that may be such a string.
    const bad = mayBeUnrecordable(payload) ? unrecordablePath(mapped.payload) : null;
    if (bad) return stageInvalid(pk, 'unrecordable_value', `field ${bad}: holds a NUL character (U+0000) or a lone surrogate, which cannot be recorded; it was not sent.`);
    const matchValue = mapped.payload[matchField];
    const mkey = matchKeyOf(matchValue, equality);
    if (mkey === null) return stageInvalid(pk, 'missing_match_value', `Match field "${matchField}" is empty: the row identifies no destination record.`);
    valid?.(mkey);
    return writer.write(pk, PAYLOAD_HASH(payload), payload, 'v', JSON.stringify(matchValue), mkey, fp);
  };

  await createStaging(q.sql, q.run.id);
  if (q.fullResync) stats.fullReason = 'full resync';
  else if (!version || !q.source.fingerprints) stats.fullReason = 'the source cannot fingerprint rows';
  else if (!(await hasVersion(q.sql, q.run.syncId, version))) stats.fullReason = 'no snapshot record of this evaluation version (first run, or the model, mappings or match key changed)';
  else {
    const done = await incrementalRead(q, { columns, version, stats, invalid, lookups, stageRow });
    if (done) {
      if (invalid.length) await recordInvalid(q.sql, q.run, invalid);
      await markStagingIntact(q.sql, q.run.id);
      return stats;
    }
    // Given up before anything was staged: read every row.
    await createStaging(q.sql, q.run.id);
    counts.queried = 0;
    counts.invalid = 0;
    invalid.length = 0;
  }

  const writer = await StagingWriter.open(q.sql, q.run.id);
  try {
    const fingerprint = version ? { columns } : undefined;
    for await (const batch of abortable(q.source.stream(q.model.sql, { batchSize: q.readBatchSize, signal: q.signal, fingerprint }), q.signal)) {
      // Lookup values of this batch not seen before are resolved in the destination's batch size.
      if (lookups?.active) await raceAbort(lookups.prepare(batch), q.signal);
      for (const row of batch) {
        counts.queried++;
        const w = stageRow(writer, row as Row, counts.queried);
        if (w) await w;
      }
      stats.rowsFetched += batch.length;
      if (invalid.length >= 1000) await recordInvalid(q.sql, q.run, invalid.splice(0));
    }
    stats.distinct = await writer.end();
  } catch (e) {
    writer.destroy();
    throw e;
  }
  if (invalid.length) await recordInvalid(q.sql, q.run, invalid);
  await markStagingIntact(q.sql, q.run.id);
  return stats;
}

/** Whether some snapshot record of the sync was evaluated under this version. */
async function hasVersion(sql: Sql, syncId: string, version: string): Promise<boolean> {
  const [r] = await sql<{ found: boolean }[]>`
    select exists (select 1 from sync_snapshots where sync_id = ${syncId} and source_fp like ${`${version}:%`}) as found`;
  return r.found;
}

/**
 * The sync's snapshot pairs in memory (loadTable), sized for the rows the sync's last run
 * queried (counting the records would cost a pass over them); undefined above `max` records.
 */
async function loadFingerprintIndex(sql: Sql, run: QueryInput['run'], max: number, version: string, signal: AbortSignal): Promise<FingerprintIndex | undefined> {
  const [last] = await sql<{ n: number | null }[]>`
    select (counts->>'queried')::int as n from runs
    where sync_id = ${run.syncId} and id <> ${run.id} and status in ('succeeded', 'partially_succeeded')
    order by id desc limit 1`;
  const conn = await sql.reserve();
  try {
    return await loadTable(conn, run.syncId, { expected: last?.n ?? 0, max, prefix: `${version}:` }, signal);
  } finally {
    conn.release();
  }
}
/** The worker's kept table when it is current (and within `max`), else the snapshot's, loaded. */
async function keptOrLoaded(q: QueryInput, max: number, version: string, stats: QueryStats): Promise<FingerprintIndex | undefined> {
  const kept = await q.fingerprintTable?.take();
  if (kept && kept.records <= max) {
    stats.keptTable = true;
    return kept;
  }
  return loadFingerprintIndex(q.sql, q.run, max, version, q.signal);
}

/**
 * Scanned bytes held while the fingerprint index loads (the scan then waits for it). Measured at a
 * million rows: 32 MB let the scan finish ~0.2 s sooner after the index loaded, but put a fresh
 * worker's peak RSS at 255 MB (16 MB: 238 MB; the bar is 256).
 */
export const SCAN_QUEUE_BYTES = 16 * 1024 * 1024;

interface IncrementalContext {
  columns: Column[];
  version: string;
  stats: QueryStats;
  invalid: InvalidRow[];
  lookups: LookupResolver | undefined;
  stageRow: (writer: StagingWriter, row: Row, n: number, valid?: (mkey: string) => void) => Promise<void> | undefined;
}

/**
 * The incremental read (see the header). Returns false, having staged nothing, when it gives up
 * for a full read: the source cannot read this model so, a key is empty (its row is invalid, and
 * the full read says which), or most rows changed (one full read is cheaper than fetches by key).
 */
async function incrementalRead(q: QueryInput, c: IncrementalContext): Promise<boolean> {
  const { sql, counts, signal } = q;
  const { keys, changed, unmatched } = stagingNames(q.run.id);
  const kt = sql`${sql(STAGING_SCHEMA)}.${sql(keys)}`;
  const ct = sql`${sql(STAGING_SCHEMA)}.${sql(changed)}`;
  const mt = sql`${sql(STAGING_SCHEMA)}.${sql(unmatched)}`;
  let session: FingerprintSession | undefined;
  const giveUp = async (reason: string) => {
    c.stats.fullReason = reason;
    await session?.close().catch(() => {});
    session = undefined;
    await sql`drop table if exists ${kt}, ${ct}, ${mt}`;
    return false;
  };
  try {
    session = await raceAbort(q.source.fingerprints!(q.model.sql, { primaryKey: q.model.primaryKey, columns: c.columns, signal }), signal);
    if (!session) return await giveUp('the source cannot read this model by key (primary-key type or column names)');

    // 1. The snapshot's pairs, in memory, when there are not too many (fingerprint-index.ts),
    // loaded while the scan starts; the scan's lines wait for it in a bounded queue. Without
    // the index the comparison is a hashed pass in SQL once the scan is in keys_<run>.
    await sql`drop table if exists ${kt}, ${ct}, ${mt}`;
    await sql`create unlogged table ${ct} (pk text)`;
    let index: FingerprintIndex | undefined | null = null;
    const max = Math.min(q.keyIndexMax ?? FINGERPRINT_INDEX_MAX, FINGERPRINT_INDEX_MAX);
    const loading = (max > 0 ? keptOrLoaded(q, max, c.version, c.stats) : Promise.resolve(undefined)).then((i) => {
      index = i;
      return i;
    });
    loading.catch(() => {}); // awaited below; a failure must not go unhandled meanwhile

    // 2. The key scan: with the index, each COPY text line is looked up as it streams and the
    // keys to read in full go to changed_<run>; the scan itself stays in memory. Without it,
    // the lines go straight into keys_<run> (opened once the index is known to be missing).
    // A session that fetches during the scan (a second connection on the same snapshot) is sent
    // the first DURING_SCAN_KEYS changed keys as they are found, so that their rows are read,
    // mapped and staged while the scan goes on; the rest wait in changed_<run> for its end.
    const scan = { n: 0, bad: 0, changed: [] as string[] };
    const queue = new ScanQueue(q.scanQueueBytes ?? SCAN_QUEUE_BYTES);
    const early = session.fetchesDuringScan ? DURING_SCAN_KEYS : 0;
    let keysCopy: KeysCopy | undefined;
    const splitter = new LineSplitter((buf, start, end) => {
      scan.n++;
      const r = index!.probeLine(buf, start, end);
      if (r.kind === 'changed') scan.changed.push(r.pk);
      else if (r.kind === 'bad') scan.bad++;
    });
    let read: ReadChanged | undefined;
    const reader = async () => (read ??= await openReadChanged(q, c, session!, scan));
    const consume = async (chunk: string | Buffer | undefined) => {
      read?.rows.check();
      const buf = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk;
      const ready = queue.offer(buf, index === null);
      if (buf && !ready.length) return;
      if ((await loading) === undefined) {
        keysCopy ??= await KeysCopy.open(sql, keys);
        for (const b of ready) await keysCopy.write(b);
        return;
      }
      for (const b of ready) splitter.push(b);
      if (scan.changed.length < FETCH_BATCH && chunk) return;
      // No fetch once a key is empty: the run gives up for a full read.
      if (scan.changed.length && scan.bad === 0 && (read?.rows.pushed ?? 0) < early) {
        const r = await reader();
        // Whole batches while the scan runs (the last one at its end), up to the quota.
        while (r.rows.pushed < early && (scan.changed.length >= FETCH_BATCH || (!chunk && scan.changed.length))) {
          r.rows.push(scan.changed.splice(0, Math.min(FETCH_BATCH, early - r.rows.pushed)));
        }
      }
      // Past the quota (or at the scan's end), the keys wait in changed_<run>.
      if ((read?.rows.pushed ?? 0) >= early || scan.bad > 0 || !chunk) {
        const pks = scan.changed.splice(0);
        if (pks.length) await sql`insert into ${ct} (pk) select unnest(${pks}::text[])`;
      }
    };
    // Gives up with the rows read so far dropped (the caller stages afresh).
    const giveUpRead = async (reason: string) => {
      if (read) {
        await read.abandon();
        read = undefined;
        c.invalid.length = 0;
        c.stats.rowsFetched = 0;
        c.stats.vanished = 0;
      }
      return giveUp(reason);
    };
    try {
      try {
        for await (const chunk of abortable(session.keys(`${c.version}:`, signal), signal)) await consume(chunk);
        await consume(undefined);
        await keysCopy?.end();
      } catch (e) {
        keysCopy?.destroy();
        if (e instanceof FingerprintUnsupported) return await giveUpRead(`the source cannot read this model by key (${e.message})`);
        throw e;
      }
      let k: { n: number; bad: number };
      if (index) {
        const rest = splitter.end();
        if (rest) throw new Error(`key scan: ${rest}`);
        k = { n: scan.n, bad: scan.bad };
      } else {
        await analyzeStaging(sql, keys);
        [k] = await sql<{ n: number; bad: number }[]>`select count(*)::int as n, count(*) filter (where pk is null or pk = '')::int as bad from ${kt}`;
      }
      if (k.bad > 0) return await giveUpRead('some rows have no primary key');
      c.stats.comparison = index ? 'memory' : 'sql';

      // 3. Without the index, the keys to read in full in SQL: no snapshot record of this key has
      // its fingerprint (new or changed), or the key is duplicated (its rows are all invalid, named
      // by the diff), or two records hold this key and fingerprint (a match value that came from
      // outside the row). One hashed pass. (Split into an anti-join and two aggregates on separate
      // connections it was slower on two cores: measured 2.3 s against 1.8 s at a million keys.)
      // No JIT: compiling the expressions took longer than they saved here.
      if (!index) {
        await sql.begin(async (tx) => {
          await tx`set local work_mem = '64MB'`;
          await tx`set local jit = off`;
          await tx`
            insert into ${ct} (pk)
            select kk.pk from ${kt} kk
            left join sync_snapshots n on n.sync_id = ${q.run.syncId} and n.primary_key = kk.pk and n.source_fp = kk.fp
            group by kk.pk having count(*) > 1 or bool_and(n.primary_key is not null) is not true`;
        });
      }
      // With the index a key seen twice is listed twice (both of its rows are read, and the diff
      // finds them duplicated): counted and read once (within a batch sent during the scan).
      const [{ n: waiting }] = await sql<{ n: number }[]>`select count(distinct pk)::int as n from ${ct}`;
      const nChanged = waiting + (read?.rows.pushed ?? 0);
      if (nChanged > 10_000 && nChanged > k.n / 4) return await giveUpRead(`${nChanged} of ${k.n} rows changed`);
      counts.queried = k.n;
      c.stats.incremental = true;
      c.stats.keysScanned = k.n;
      // What the diff needs of the scan (diff.ts, incrementalScan): which snapshot records no
      // scanned row claims. In SQL that is keys_<run> itself; in memory, the index lists them
      // (usually few: the records of changed and deleted rows) into unmatched_<run>. The table's
      // comment, written last, says the scan is complete and under which version it compared.
      const scanned = sql.unsafe(`'version=${c.version} rows=${k.n}'`);
      const describeScan = async (): Promise<void> => {
        if (!index) {
          await sql`comment on table ${kt} is ${scanned}`;
          return;
        }
        const copy = await KeysCopy.open(sql, unmatched);
        try {
          for (const chunk of (index as FingerprintIndex).unmatched()) await copy.write(chunk);
          await copy.end();
        } catch (e) {
          copy.destroy();
          throw e;
        }
        c.stats.snapshotRecords = (index as FingerprintIndex).records;
        q.fingerprintTable?.compared(index as FingerprintIndex);
        index = undefined;
        await analyzeStaging(sql, unmatched);
        await sql`comment on table ${mt} is ${scanned}`;
      };
      // Written beside the fetch below (its own connection; the fetch waits on the source).
      const described = describeScan();
      described.catch(() => {}); // awaited below; a failure must not go unhandled meanwhile

      // 4. The rows of the keys still waiting, by key, in batches, from the same snapshot of the
      // source, after those sent during the scan (ChangedRows: one fetch ahead of the staging).
      let fetchFailed = false;
      try {
        const r = nChanged || read ? await reader() : undefined;
        r?.decide(nChanged, k.n);
        if (waiting) {
          const keyBatches = sql<{ pk: string }[]>`select distinct pk from ${ct}`.cursor(FETCH_BATCH)[Symbol.asyncIterator]();
          try {
            for (;;) {
              await r!.rows.room();
              const next = await keyBatches.next();
              if (next.done) break;
              r!.rows.push(next.value.map((x) => x.pk));
            }
          } catch (e) {
            await keyBatches.return?.().catch(() => {}); // the cursor's connection back to the pool
            throw e;
          }
        }
        if (r) {
          await r.rows.end();
          c.stats.distinct = await r.writer.end();
          c.stats.recordsCopied = await r.endRecords();
        } else {
          // Nothing changed: the staging stays empty (and its writer proves nothing to look for).
          const writer = await StagingWriter.open(sql, q.run.id);
          c.stats.distinct = await writer.end();
        }
        if (c.invalid.length) await recordInvalid(sql, q.run, c.invalid.splice(0));
      } catch (e) {
        fetchFailed = true;
        throw e;
      } finally {
        // The scan's description is complete before the read ends, whatever the fetch's outcome
        // (the fetch's error, when there is one, is the one reported).
        await described.catch((e) => {
          if (!fetchFailed) throw e;
        });
      }
    } catch (e) {
      // No fetch or lookup of this execution may still be running when it ends (a next one rebuilds its tables).
      await read?.abandon();
      throw e;
    }
    await session.close();
    session = undefined;
    return true;
  } finally {
    if (session) await session.close().catch(() => {});
  }
}

/** The text the engine records a primary-key value as (undefined for none). */
function keyText(v: unknown): string | undefined {
  if (v === null || v === undefined) return undefined;
  return typeof v === 'object' ? JSON.stringify(v) : String(v);
}

/** The fetch and staging of an incremental run's changed rows (openReadChanged). */
interface ReadChanged {
  writer: StagingWriter;
  rows: ChangedRows;
  /**
   * The scan is over and the read goes on: `changed` keys of `scanned` are read in full. Invalid
   * rows are recorded from now on (before, a give-up must leave none behind), and the staged rows'
   * records are copied only if they are few (fewStaged).
   */
  decide(changed: number, scanned: number): void;
  /** Waits for the records' lookups; whether rec_<run> holds the records of every valid staged row. */
  endRecords(): Promise<boolean>;
  /** Stops fetching and staging, and waits for what is in flight (the staging is left unfinished). */
  abandon(): Promise<void>;
}

/**
 * Opens the staging writer and the fetch of changed rows (ChangedRows) of an incremental read.
 * Few rows to stage: their snapshot records are looked up batch by batch as they are staged,
 * beside the fetches, instead of by the diff after them (StagedRecordsCopy). While the scan
 * runs their number is not known yet: the lookups stop once the rows staged are no longer few
 * for the keys scanned so far, and the diff looks them up instead.
 */
async function openReadChanged(q: QueryInput, c: IncrementalContext, session: FingerprintSession, scan: { n: number }): Promise<ReadChanged> {
  const { sql, signal } = q;
  const writer = await StagingWriter.open(sql, q.run.id);
  let records: StagedRecordsCopy | undefined;
  let few = true;
  let decided = false;
  let scanned: number | undefined;
  let staged = 0;
  let n = 0;
  const rows = new ChangedRows(
    (pks) => raceAbort(session.fetch(pks, signal), signal),
    async (all, wanted) => {
      if (signal.aborted) throw signal.reason;
      const fetched = all.filter((row) => {
        const k = keyText(row[q.model.primaryKey]);
        return k !== undefined && wanted.has(k);
      });
      if (c.lookups?.active) await raceAbort(c.lookups.prepare(fetched), signal);
      const seen = new Set<string>();
      const mkeys: string[] = [];
      const valid = (mkey: string) => void mkeys.push(mkey);
      for (const row of fetched) {
        seen.add(keyText(row[q.model.primaryKey])!);
        const w = c.stageRow(writer, row, ++n, valid);
        if (w) await w;
      }
      staged += fetched.length;
      few &&= fewStaged(staged, scanned ?? scan.n);
      if (few && mkeys.length) (records ??= new StagedRecordsCopy(sql, q.run.id, q.run.syncId)).add(mkeys);
      c.stats.rowsFetched += fetched.length;
      // A key the scan saw and the fetch did not (the model changed in between, where the
      // source gives no snapshot): its records stay as they are; the next run sees it gone.
      for (const pk of wanted) {
        if (seen.has(pk)) continue;
        c.stats.vanished++;
        const w = writer.write(pk, null, null, 'g');
        if (w) await w;
      }
      if (decided && c.invalid.length >= 1000) await recordInvalid(sql, q.run, c.invalid.splice(0));
    },
  );
  return {
    writer,
    rows,
    decide(changed, total) {
      decided = true;
      scanned = total;
      few &&= fewStaged(changed, total);
    },
    async endRecords() {
      if (!records) return false;
      await records.end();
      return few;
    },
    async abandon() {
      rows.cancel();
      // The batch being staged finishes first: a destroyed COPY stream would never drain.
      await rows.end().catch(() => {});
      writer.destroy();
      await records?.end().catch(() => {});
    },
  };
}

/**
 * COPY text lines into a (pk, fp) table of the run (keys_<run>, unmatched_<run>; created here),
 * honouring backpressure.
 */
class KeysCopy {
  readonly #stream: Writable;
  readonly #release: () => void;
  #failed: Error | undefined;
  #released = false;

  private constructor(stream: Writable, release: () => void) {
    this.#stream = stream;
    this.#release = release;
    stream.on('error', (e: Error) => {
      this.#failed ??= e;
    });
  }

  static async open(sql: Sql, table: string): Promise<KeysCopy> {
    // A connection of its own (see StagingWriter.open).
    const conn = await sql.reserve();
    try {
      const t = conn`${conn(STAGING_SCHEMA)}.${conn(table)}`;
      await conn`create unlogged table if not exists ${t} (pk text, fp text)`;
      const stream = await conn`copy ${t} (pk, fp) from stdin`.writable();
      return new KeysCopy(stream, () => conn.release());
    } catch (e) {
      conn.release();
      throw e;
    }
  }

  async write(chunk: Buffer): Promise<void> {
    if (this.#failed) throw this.#failed;
    if (!this.#stream.write(chunk)) await once(this.#stream, 'drain');
  }

  async end(): Promise<void> {
    try {
      if (this.#failed) throw this.#failed;
      const done = once(this.#stream, 'finish');
      this.#stream.end();
      await done;
    } finally {
      this.#done();
    }
  }

  destroy(): void {
    this.#stream.destroy();
    this.#done();
  }

  #done(): void {
    if (this.#released) return;
    this.#released = true;
    this.#release();
  }
}
