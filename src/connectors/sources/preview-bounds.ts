import { stringifyJson } from '../../lib/json.ts';
import type { Column, PreviewResult, Row } from '../types.ts';

// A preview answers an HTTP request: it must never grow with the data (a table of 100 MB
// values) nor fail to serialize. Values are cut to 64 KiB and the rows to 1 MiB in total, and
// the response says so. The sources also keep what they read small: PostgreSQL cuts long values
// server-side and fetches few rows at a time; MySQL/MariaDB reads one row at a time.

export const PREVIEW_MAX_VALUE_BYTES = 64 * 1024;
export const PREVIEW_MAX_TOTAL_BYTES = 1024 * 1024;
const ELLIPSIS = '…';

/** The first `maxBytes` bytes of `s` (whole UTF-8 characters only). */
export function cutUtf8(s: string, maxBytes: number): string {
  if (maxBytes <= 0) return '';
  if (s.length * 3 <= maxBytes) return s;
  const b = Buffer.from(s, 'utf8');
  if (b.length <= maxBytes) return s;
  let end = maxBytes;
  while (end > 0 && (b[end] & 0xc0) === 0x80) end--; // do not split a multi-byte character
  return b.subarray(0, end).toString('utf8');
}

function size(v: unknown): { bytes: number; text?: string } {
  if (v === null || v === undefined || typeof v === 'boolean' || typeof v === 'number') return { bytes: 8 };
  if (typeof v === 'string') return { bytes: v.length * 3 <= PREVIEW_MAX_VALUE_BYTES ? v.length : Buffer.byteLength(v), text: v };
  const text = typeof v === 'object' ? stringifyJson(v) ?? 'null' : String(v);
  return { bytes: Buffer.byteLength(text), text };
}

export class PreviewCollector {
  readonly rows: Row[] = [];
  #values = 0;
  #rowsOmitted = false;
  #bytes = 0;
  #widestRow = 0;

  readonly maxValueBytes: number;
  readonly maxTotalBytes: number;

  constructor(maxValueBytes = PREVIEW_MAX_VALUE_BYTES, maxTotalBytes = PREVIEW_MAX_TOTAL_BYTES) {
    this.maxValueBytes = maxValueBytes;
    this.maxTotalBytes = maxTotalBytes;
  }

  /** Largest row added so far, in bytes (after cutting): lets a source size its next fetch. */
  get widestRow(): number {
    return this.#widestRow;
  }

  get remainingBytes(): number {
    return Math.max(0, this.maxTotalBytes - this.#bytes);
  }

  /**
   * Adds a row, cutting values longer than maxValueBytes. Returns false (and adds nothing) once
   * the total is spent; the first row is always added, its values cut to what the total allows.
   */
  add(row: Row): boolean {
    if (this.#bytes >= this.maxTotalBytes && this.rows.length) {
      this.#rowsOmitted = true;
      return false;
    }
    let rowBytes = 0;
    const sizes: [string, unknown, { bytes: number; text?: string }][] = [];
    for (const [k, v] of Object.entries(row)) {
      const s = size(v);
      sizes.push([k, v, s]);
      rowBytes += k.length + Math.min(s.bytes, this.maxValueBytes);
    }
    if (this.rows.length && this.#bytes + rowBytes > this.maxTotalBytes) {
      this.#rowsOmitted = true;
      this.#bytes = this.maxTotalBytes;
      return false;
    }
    const out: Row = {};
    let used = 0;
    for (const [k, v, s] of sizes) {
      const allowed = Math.min(this.maxValueBytes, Math.max(0, this.maxTotalBytes - this.#bytes - used));
      if (s.bytes > allowed && s.text !== undefined) {
        out[k] = cutUtf8(s.text, allowed) + ELLIPSIS;
        this.#values++;
        used += k.length + allowed;
      } else {
        out[k] = v;
        used += k.length + s.bytes;
      }
    }
    this.rows.push(out);
    this.#bytes += used;
    this.#widestRow = Math.max(this.#widestRow, used);
    return true;
  }

  /** Marks that the query had more rows (within the limit) than were read. */
  omitRest(): void {
    this.#rowsOmitted = true;
  }

  result(columns: Column[]): PreviewResult {
    if (!this.#values && !this.#rowsOmitted) return { columns, rows: this.rows };
    return {
      columns,
      rows: this.rows,
      truncated: { values: this.#values, rowsOmitted: this.#rowsOmitted, maxValueBytes: this.maxValueBytes, maxTotalBytes: this.maxTotalBytes },
    };
  }
}
