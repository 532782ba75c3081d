import type { Column, DestinationCapabilities, DestinationConnector, DestinationField, Row, RowResult, SourceConnector, WriteRequest, WriteResult } from '../../src/connectors/types.ts';
import { ConnectorError } from '../../src/errors.ts';

// In-process connectors for the destination-identity plan harness
// (test/engine/identity-plan.property.test.ts): a source that streams rows held in memory, and a
// CRM-like destination that keeps its records in a Map keyed by email, compared the way it
// declares (case-insensitive and trimmed, or exact). They implement the public connector
// interfaces, so the engine's own phases (query, diff, deliver, checkpoint) run against them
// unchanged; nothing of the engine is replaced.
//
// The destination also watches the engine: it records a violation when a delete addresses a
// record Backhaul never wrote or one a current model row claims, when a delete request starts
// while a write request of the run is unanswered or a write starts after a delete (deletes come
// last), and when a record id names another record than the match value.

export type Equality = 'exact' | 'case_insensitive';

/** The destination's identity of an email: null when it identifies nothing. */
export function destKey(email: string | null | undefined, equality: Equality): string | null {
  if (email === null || email === undefined || email.trim() === '') return null;
  return equality === 'case_insensitive' ? email.trim().toLowerCase() : email;
}

export interface PersonRow {
  email: string | null;
  name: string;
}

/** A source over rows kept in memory: (id, email, name), streamed in batches of `batchSize`. */
export function memorySource(rows: () => [number, PersonRow][]): SourceConnector {
  const columns: Column[] = [
    { name: 'id', type: 'integer', nativeType: 'int4' },
    { name: 'email', type: 'string', nativeType: 'text' },
    { name: 'name', type: 'string', nativeType: 'text' },
  ];
  return {
    async test() {},
    async columns() {
      return columns;
    },
    async preview() {
      return { columns, rows: rows().map(([id, r]) => ({ id, ...r })) };
    },
    async *stream(_sql, opts) {
      const all: Row[] = rows().map(([id, r]) => ({ id, email: r.email, name: r.name }));
      const n = Math.max(1, opts?.batchSize ?? 1000);
      for (let i = 0; i < all.length; i += n) yield all.slice(i, i + n);
    },
    async close() {},
  };
}

export interface DestRecord {
  id: string;
  email: string;
  name: string;
  /** Backhaul wrote it (a write of the engine reached it), as opposed to a record made by someone else. */
  byBackhaul: boolean;
}

/** Faults of one run, decided from a seed so a replay takes the same path whatever the interleaving. */
export interface DestFaults {
  seed: number;
  /** Rows whose email's local part is listed are refused (`invalid_email`, not retryable). */
  reject: string[];
  /** Requests fail retryably, some before and some after being applied (the answer is lost). */
  flaky: boolean;
  /** From this request number on, every request fails fatally (the run fails part-way). */
  downAfter: number | null;
}

export const NO_FAULTS: DestFaults = { seed: 0, reject: [], flaky: false, downAfter: null };

/** An acknowledged operation: what the engine may put into (or remove from) its snapshot. */
export interface Ack {
  op: 'write' | 'delete';
  key: string;
  primaryKey: string;
  email: string;
  name: string;
  id: string;
}

/** FNV-1a of a string with murmur3's final mix (so near strings land far apart), in [0, 1). */
function unit(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return ((h ^ (h >>> 16)) >>> 0) / 2 ** 32;
}

export class MemoryDestination implements DestinationConnector {
  readonly records = new Map<string, DestRecord>();
  readonly violations: string[] = [];
  /** Keys the current model claims (any row with a match value, valid or not): never deleted. */
  claimed = new Set<string>();
  faults: DestFaults = NO_FAULTS;
  /** This run's requests, acknowledgements, and whether a request failed fatally. */
  requests = 0;
  acks: Ack[] = [];
  wentDown = false;
  private inflightWrites = 0;
  private deletesStarted = false;
  private nextId = 1;
  private seen = new Map<string, number>();
  readonly equality: Equality;

  constructor(equality: Equality) {
    this.equality = equality;
  }

  /** A record someone else made (not Backhaul). */
  addForeign(email: string, name: string): void {
    const k = destKey(email, this.equality);
    if (k && !this.records.has(k)) this.records.set(k, { id: `r${this.nextId++}`, email, name, byBackhaul: false });
  }

  /** Starts a run: its faults and the keys the model claims during it. */
  beginRun(faults: DestFaults, claimed: Set<string>): void {
    this.faults = faults;
    this.claimed = claimed;
    this.requests = 0;
    this.acks = [];
    this.wentDown = false;
    this.inflightWrites = 0;
    this.deletesStarted = false;
    this.seen.clear();
  }

  reset(): void {
    this.records.clear();
    this.violations.length = 0;
    this.nextId = 1;
  }

  async test(): Promise<void> {}
  async objects() {
    return [{ name: 'contacts' }];
  }
  async fields(): Promise<DestinationField[]> {
    return [
      { name: 'email', type: 'string', required: false, identifier: true, equality: this.equality },
      { name: 'name', type: 'string', required: false, identifier: false },
    ];
  }
  capabilities(): DestinationCapabilities {
    return { operations: ['insert', 'update', 'upsert', 'delete'], modes: ['insert', 'update', 'upsert', 'mirror'], maxBatchSize: 100, supportsDelete: true };
  }
  async close(): Promise<void> {}

  async write(req: WriteRequest): Promise<WriteResult> {
    const n = ++this.requests;
    const isDelete = req.operation === 'delete';
    const keys = req.rows.map((r) => String(r.payload.email)).sort().join(',');
    if (isDelete) {
      if (this.inflightWrites > 0) this.violations.push(`a delete request (${keys}) started while ${this.inflightWrites} write request(s) were unanswered`);
      this.deletesStarted = true;
    } else {
      if (this.deletesStarted) this.violations.push(`a ${req.operation} request (${keys}) started after the run's deletes`);
      this.inflightWrites++;
    }
    try {
      // Let other batches of the run interleave with this one.
      const sig = `${this.faults.seed}|${req.operation}|${keys}`;
      const nth = (this.seen.get(sig) ?? 0) + 1;
      this.seen.set(sig, nth);
      const r = unit(`${sig}|${nth}`);
      for (let i = Math.floor(unit(`${sig}|tick|${nth}`) * 3); i > 0; i--) await new Promise((res) => setImmediate(res));
      if (this.faults.downAfter !== null && n > this.faults.downAfter) {
        this.wentDown = true;
        throw new ConnectorError('auth_failed', 'The destination refused the credentials.', { classification: 'fatal' });
      }
      if (this.faults.flaky && r < 0.2) throw new ConnectorError('http_503', 'Service unavailable', { classification: 'retryable' });
      const results = req.rows.map((row) => this.apply(req.operation, row.primaryKey, row.payload, row.recordId));
      if (this.faults.flaky && r > 0.9) throw new ConnectorError('http_503', 'Service unavailable (after applying the request)', { classification: 'retryable' });
      req.rows.forEach((row, i) => {
        const res = results[i];
        if (res.status !== 'succeeded') return;
        const email = String(row.payload.email);
        this.acks.push({ op: isDelete ? 'delete' : 'write', key: destKey(email, this.equality)!, primaryKey: row.primaryKey, email, name: String(row.payload.name ?? ''), id: res.externalId! });
      });
      return { results };
    } finally {
      if (!isDelete) this.inflightWrites--;
    }
  }

  private apply(op: WriteRequest['operation'], primaryKey: string, payload: Record<string, unknown>, recordId: string | undefined): RowResult {
    const email = payload.email;
    if (typeof email !== 'string') return { status: 'rejected', code: 'missing_email', message: 'email is required', retryable: false };
    const k = destKey(email, this.equality);
    if (!k) return { status: 'rejected', code: 'missing_email', message: 'email is required', retryable: false };
    if (this.faults.reject.includes(email.trim().toLowerCase().split('@')[0])) return { status: 'rejected', code: 'invalid_email', message: `${email} is refused`, retryable: false };
    const existing = this.records.get(k);
    if (recordId !== undefined) {
      for (const [other, rec] of this.records) {
        if (rec.id === recordId && other !== k) this.violations.push(`${op} of row ${primaryKey} names record ${recordId} (${other}) but match value ${email}`);
      }
    }
    if (op === 'delete') {
      if (!existing) return { status: 'succeeded', externalId: recordId ?? 'gone' };
      if (!existing.byBackhaul) this.violations.push(`deleted ${k}, a record Backhaul never wrote`);
      if (this.claimed.has(k)) this.violations.push(`deleted ${k}, still claimed by a row of the model`);
      this.records.delete(k);
      return { status: 'succeeded', externalId: existing.id };
    }
    if (op === 'update' && !existing) return { status: 'rejected', code: 'not_found', message: `no contact ${email}`, retryable: false };
    if (op === 'insert' && existing) return { status: 'rejected', code: 'duplicate', message: `contact ${email} exists`, retryable: false };
    const rec: DestRecord = { id: existing?.id ?? `r${this.nextId++}`, email, name: String(payload.name ?? ''), byBackhaul: true };
    this.records.set(k, rec);
    return { status: 'succeeded', externalId: rec.id };
  }
}
