import { hash } from 'node:crypto';
import { compileMappings, type MappingSpec } from '../connectors/mapping.ts';
import type { DestinationConnector, DestinationField, Row, SourceConnector } from '../connectors/types.ts';
import type { Sql } from '../db/client.ts';
import { ConnectorError } from '../errors.ts';
import { stringifyPayload } from '../lib/json.ts';
import { abortable, raceAbort } from './abort.ts';
import { equalityOf, matchKeyOf, unrecordablePath } from './identity.ts';
import { LookupResolver } from './lookups.ts';
import { recordInvalid, type InvalidRow } from './records.ts';
import { createStaging, StagingWriter } from './staging.ts';
import type { RunCounts } from './status.ts';

// Querying: stream the model through the source's cursor, map each row, and COPY
// (pk, hash, payload, match value, match key) into the run's staging table. Memory stays flat.
// Everything that would make a row unsendable or unrecordable is found here, before anything is
// sent: a missing primary key, a mapping error, a missing match value, text the control database
// cannot store. Such rows are invalid (recorded with their reason) and staged as claims only.

const PAYLOAD_HASH = (s: string) => hash('sha1', s, 'base64url');

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
  /** Aborted on cancel, shutdown or the run's deadline: the read stops at once. */
  signal: AbortSignal;
}

/** Runs the querying phase; counts.queried and counts.invalid are set from scratch. */
export async function queryPhase(q: QueryInput): Promise<void> {
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

  const { counts } = q;
  counts.queried = 0;
  counts.invalid = 0;
  await createStaging(q.sql, q.run.id);
  const writer = await StagingWriter.open(q.sql, q.run.id);
  const invalid: InvalidRow[] = [];
  const stageInvalid = (pk: string, code: string, message: string, mkey: string | null = null) => {
    counts.invalid++;
    invalid.push({ pk, code, message });
    return writer.write(pk, null, null, 'i', null, mkey);
  };
  try {
    for await (const batch of abortable(q.source.stream(q.model.sql, { batchSize: q.readBatchSize, signal: q.signal }), q.signal)) {
      // Lookup values of this batch not seen before are resolved in the destination's batch size.
      if (lookups?.active) await raceAbort(lookups.prepare(batch), q.signal);
      for (const row of batch) {
        counts.queried++;
        const pkValue = (row as Row)[q.model.primaryKey];
        if (pkValue === null || pkValue === undefined || pkValue === '') {
          counts.invalid++;
          invalid.push({ pk: `(row ${counts.queried})`, code: 'missing_primary_key', message: `Row ${counts.queried} has no value in primary-key column "${q.model.primaryKey}".` });
          continue;
        }
        let pk = typeof pkValue === 'object' ? JSON.stringify(pkValue) : String(pkValue);
        if (unrecordablePath(pk)) {
          // The key itself cannot be stored: record the row under an escaped form of it.
          pk = JSON.stringify(pk).slice(1, -1).replace(/\\u0000/g, '\\\\u0000');
          counts.invalid++;
          invalid.push({ pk: `(row ${counts.queried})`, code: 'unrecordable_value', message: `Row ${counts.queried}'s primary key ${pk.slice(0, 100)} holds a NUL character or a lone surrogate, which cannot be recorded.` });
          continue;
        }
        const mapped = map(row);
        if (!mapped.ok) {
          const w = stageInvalid(pk, mapped.code, mapped.message, matchKeyOf(row[q.matchKey.sourceColumn], equality));
          if (w) await w;
          continue;
        }
        const bad = unrecordablePath(mapped.payload);
        if (bad) {
          const w = stageInvalid(pk, 'unrecordable_value', `field ${bad}: holds a NUL character (U+0000) or a lone surrogate, which cannot be recorded; it was not sent.`);
          if (w) await w;
          continue;
        }
        const matchValue = mapped.payload[matchField];
        const mkey = matchKeyOf(matchValue, equality);
        if (mkey === null) {
          const w = stageInvalid(pk, 'missing_match_value', `Match field "${matchField}" is empty: the row identifies no destination record.`);
          if (w) await w;
          continue;
        }
        const payload = stringifyPayload(mapped.payload);
        const w = writer.write(pk, PAYLOAD_HASH(payload), payload, 'v', JSON.stringify(matchValue), mkey);
        if (w) await w;
      }
      if (invalid.length >= 1000) await recordInvalid(q.sql, q.run, invalid.splice(0));
    }
    await writer.end();
  } catch (e) {
    writer.destroy();
    throw e;
  }
  if (invalid.length) await recordInvalid(q.sql, q.run, invalid);
}
