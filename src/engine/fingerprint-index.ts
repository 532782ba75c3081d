// The incremental key scan's comparison, in memory (issue 17). An incremental run must find the
// keys whose (primary key, source fingerprint) matches no snapshot record (new, changed) or is
// ambiguous (a key the scan saw twice, two records holding one key and fingerprint); then the
// diff needs the snapshot records no scanned row claims. Done in SQL, that is the scan copied
// into the control database, a hash join and an aggregate over every key (about 1.9 s at a
// million keys) and an anti-join per diff. Done here, it is a lookup per scanned line: the
// snapshot's pairs are loaded into an open-addressing table (16 bytes per slot, at most 70%
// full: 32 MB for a million records) while the scan starts, each scanned line probes it, and
// the pairs never shown are listed at the end from the loaded lines, kept for that.
//
// A slot is placed by its key's hash, so that the records of one key lie on one probe path: a
// key held by two records or more is found while loading ("shared"), and only the sightings of
// such keys are counted in a set of 64-bit key hashes (a key seen twice is read in full, like the
// SQL's count(*) > 1). Any other key seen twice shows its one pair twice, or a pair that matches
// nothing, and is read in full either way.
//
// Both sides arrive as PostgreSQL COPY text lines `pk\tfp\n`. A pair is hashed by its values
// (lines holding a backslash are unescaped first), so escapers that differ in what they escape
// still agree, and equality is the SQL join's: byte equality. Key and fingerprint are hashed
// where they lie (no copy), then combined (pairHash).
//
// Collisions: a slot holds 32 bits of its key's hash and 64 of its pair's. A changed row would
// be taken as unchanged only if its new fingerprint's pair hash equalled that of a record of the
// same key (about n / 2⁶⁴ per run, 10⁻¹³ at a million changed rows: the odds of the 64-bit source
// fingerprint itself missing a change), or a record of another key matched all 96 bits.

/** Snapshot records above which the comparison stays in SQL (the table would pass 64 MB). */
export const FINGERPRINT_INDEX_MAX = 2_000_000;
/**
 * A table doubles past this share of its slots filled; a first size is chosen at most FIRST_LOAD
 * full (a power of two: a million records take 2²¹ slots, 32 MB). With linear probing and these
 * hashes a lookup of a present pair reads about 1.5–2 slots, mostly in one cache line.
 */
const MAX_LOAD = 0.7;
const FIRST_LOAD = 0.6;

// A slot's state, in its word's low 3 bits.
const EMPTY = 0;
/** A snapshot record's pair the scan has not shown (yet). */
const UNSEEN = 1;
/** Shown once by the scan: its key is unchanged. */
const SEEN = 2;
/** Two snapshot records hold this pair and the scan has not shown it. */
const DOUBLE_UNSEEN = 3;
/** Shown by the scan and ambiguous (seen twice, or two records hold it): read in full. */
const AMBIGUOUS = 4;
/** A removed record's slot (removeKey): probed past, never matched, not listed, dropped when the table grows. */
const DEAD = 5;
const STATE = 7;
/** Flag: the slot's key is held by another snapshot record too (with another fingerprint). */
const SHARED = 8;
/** Flag: two snapshot records hold this pair (kept through a run, so that reset() can restore DOUBLE_UNSEEN). */
const DOUBLE = 16;

/** The snapshot's lines are kept in segments of this size (a slot names its line by one 32-bit offset). */
const SEGMENT_BITS = 22;
const SEGMENT = 1 << SEGMENT_BITS;
/** Segments at most: 2 GB of lines, the reach of a 31-bit offset. */
const MAX_SEGMENTS = 2 ** (31 - SEGMENT_BITS);
/** Flag of a line's offset: its fingerprint's prefix was left out. */
const STRIPPED = 2 ** 31;

/** What a scanned line says about its key. */
export type Probe =
  /** The key's record holds this fingerprint and nothing else claims it: not read. */
  | { kind: 'unchanged' }
  /** Read in full: new, changed or ambiguous. `pk` is the key's text. */
  | { kind: 'changed'; pk: string }
  /** NULL or empty primary key. */
  | { kind: 'bad' };

export class FingerprintIndex {
  #mask: number;
  /** Slot i is [key hash, pair hash (2 words), state | SHARED] at 4i: one cache line per probe. */
  #slots: Uint32Array;
  /** Slot i's snapshot line: segment << SEGMENT_BITS | position (only read when listing unmatched records). */
  #at: Uint32Array;
  /** The snapshot's COPY lines as loaded, each ending in a newline. */
  readonly #segments: Buffer[] = [];
  #pos = SEGMENT;
  /** The sightings of shared keys (created at the first). */
  #keys: HashSet64 | undefined;
  #entries = 0;
  /** Slots of removed records among #entries, and the bytes of their lines (garbage in the segments). */
  #dead = 0;
  #deadBytes = 0;
  /** Pairs at which the table doubles. */
  #limit: number;
  #records = 0;
  readonly #max: number;

  /** The fingerprints' usual prefix (the evaluation version), kept once instead of per line. */
  readonly #prefix: Buffer;

  /**
   * A table that grows to at most `max` pairs (`expected`: a first size, to grow less).
   * `fpPrefix`: what most fingerprints start with (saves memory only).
   */
  constructor(expected = 0, max = FINGERPRINT_INDEX_MAX, fpPrefix = '') {
    this.#max = max;
    this.#prefix = Buffer.from(fpPrefix, 'utf8');
    let size = 1024;
    while (size * FIRST_LOAD < Math.min(expected, max)) size *= 2;
    this.#mask = size - 1;
    this.#limit = Math.floor(size * MAX_LOAD);
    this.#slots = new Uint32Array(size * 4);
    this.#at = new Uint32Array(size);
  }

  /** Doubles the table, re-placing every pair by its key's hash. */
  #grow(): void {
    const old = this.#slots;
    const oldAt = this.#at;
    const size = (this.#mask + 1) * 2;
    this.#mask = size - 1;
    this.#limit = Math.floor(size * MAX_LOAD);
    const slots = (this.#slots = new Uint32Array(size * 4));
    const at = (this.#at = new Uint32Array(size));
    this.#entries -= this.#dead;
    this.#dead = 0;
    for (let j = 0; j < old.length; j += 4) {
      if (old[j + 3] === EMPTY || (old[j + 3] & STATE) === DEAD) continue;
      let i = old[j] & this.#mask;
      while (slots[i * 4 + 3] !== EMPTY) i = (i + 1) & this.#mask;
      slots.set(old.subarray(j, j + 4), i * 4);
      at[i] = oldAt[j / 4];
    }
  }

  /**
   * Keeps a snapshot line (`line[start, end)`) and returns where it lies (with STRIPPED when
   * its fingerprint's prefix was left out), or -1 when the lines would pass 2 GB. A line longer
   * than a segment gets a segment of its own.
   */
  #keep(line: Buffer, start: number, end: number): number {
    // The fingerprint's prefix, when it has it, is not kept (put back by unmatched()).
    const tab = LINE_TAB; // found by readLine, just before
    const p = this.#prefix;
    let cut = -1;
    if (p.length && tab >= 0 && tab + 1 + p.length <= end && startsWith(line, tab + 1, p)) cut = tab + 1;
    const len = end - start + 1 - (cut < 0 ? 0 : p.length);
    if (this.#pos + len > (this.#segments.at(-1)?.length ?? 0)) {
      if (this.#segments.length >= MAX_SEGMENTS) return -1;
      this.#segments.push(Buffer.allocUnsafe(Math.max(SEGMENT, len)));
      this.#pos = 0;
    }
    const seg = this.#segments.length - 1;
    const at = this.#pos;
    const to = this.#segments[seg];
    if (cut < 0) line.copy(to, at, start, end);
    else {
      line.copy(to, at, start, cut);
      line.copy(to, at + cut - start, cut + p.length, end);
    }
    to[at + len - 1] = 0x0a;
    this.#pos += len;
    return (seg * SEGMENT + at + (cut < 0 ? 0 : STRIPPED)) >>> 0;
  }

  /** Pairs added. */
  get size(): number {
    return this.#entries;
  }

  /** Snapshot lines added (records, with or without a fingerprint); set by the cache's refresh (it counts them). */
  get records(): number {
    return this.#records;
  }

  set records(n: number) {
    this.#records = n;
  }

  /** Memory held: the table and the kept lines (bytes). */
  get bytes(): number {
    return this.#slots.byteLength + this.#at.byteLength + this.#segments.reduce((n, b) => n + b.length, 0);
  }

  /** The share of the table's pairs and of its kept lines that removed records still take (0–1, the larger). */
  get garbage(): number {
    const lines = this.#segments.reduce((n, b) => n + b.length, 0);
    return Math.max(this.#entries ? this.#dead / this.#entries : 0, lines ? this.#deadBytes / lines : 0);
  }

  /**
   * Readies a table a run has probed for the next run (cross-run cache, fingerprint-cache.ts):
   * every record's pair unseen again, no key sighted.
   */
  reset(): void {
    const slots = this.#slots;
    for (let o = 3; o < slots.length; o += 4) {
      const word = slots[o];
      const state = word & STATE;
      if (state === EMPTY || state === DEAD) continue;
      slots[o] = (word & ~STATE) | (word & DOUBLE ? DOUBLE_UNSEEN : UNSEEN);
    }
    this.#keys = undefined;
  }

  /**
   * Removes every record of primary key `pk` (its value, not COPY text); returns how many pairs
   * it held. Records without a fingerprint were only counted: `records` is set by the caller.
   * The key's slots are found on its probe path by their 32-bit key hash, then confirmed by
   * hashing the kept line's key (96 bits).
   */
  removeKey(pk: string): number {
    const key = Buffer.from(pk, 'utf8');
    if (!key.length) return 0;
    hash3(key, 0, key.length, PK);
    const want0 = PK[0];
    const want1 = PK[1];
    const want2 = PK[2];
    const slots = this.#slots;
    let removed = 0;
    for (let i = want0 & this.#mask; ; i = (i + 1) & this.#mask) {
      const o = i * 4;
      const state = slots[o + 3] & STATE;
      if (state === EMPTY) break;
      if (state === DEAD || slots[o] !== want0) continue;
      const line = this.#line(i);
      readLine(line.buf, line.start, line.end);
      if (PK[0] !== want0 || PK[1] !== want1 || PK[2] !== want2) continue;
      slots[o + 3] = DEAD;
      this.#dead++;
      this.#deadBytes += line.end - line.start + 1;
      removed++;
    }
    return removed;
  }

  /**
   * Every pair the table holds, as `pk\tfp` (values, not COPY text) with how many records hold it
   * (1 or 2: "two or more") and whether its key is shared, sorted: what a table loaded from a
   * snapshot holds, whatever its history (tests compare a kept table with a fresh one).
   */
  contents(): string[] {
    const out: string[] = [];
    const slots = this.#slots;
    for (let i = 0; i <= this.#mask; i++) {
      const word = slots[i * 4 + 3];
      const state = word & STATE;
      if (state === EMPTY || state === DEAD) continue;
      const { buf, start, end } = this.#line(i);
      const [pk, fp] = buf.toString('utf8', start, end).split('\t');
      const value = `${copyTextValue(pk)}\t${this.#at[i] >= STRIPPED ? this.#prefix.toString('utf8') : ''}${copyTextValue(fp)}`;
      out.push(`${value}|${word & DOUBLE ? 2 : 1}|${word & SHARED ? 'shared' : ''}`);
    }
    return out.sort();
  }

  /** Slot i's kept line: `buf[start, end)`, without its newline (a stripped prefix stays out: the key is what matters). */
  #line(i: number): { buf: Buffer; start: number; end: number } {
    const at = this.#at[i] % STRIPPED;
    const buf = this.#segments[Math.floor(at / SEGMENT)];
    const start = at % SEGMENT;
    return { buf, start, end: buf.indexOf(0x0a, start) };
  }

  /**
   * Adds a snapshot record's pair from one COPY text line (`line[start, end)`, no newline).
   * Returns false, adding nothing, when that would pass `max` records.
   */
  addLine(line: Buffer, start: number, end: number): boolean {
    if (this.#records >= this.#max) return false;
    this.#records++;
    // A record without a fingerprint (`\N`) matches no scanned line: counted only.
    if (end - start >= 3 && line[end - 3] === 0x09 && line[end - 2] === 0x5c && line[end - 1] === 0x4e) return true;
    if (readLine(line, start, end) === null) return true;
    if (this.#entries >= this.#limit) this.#grow();
    const o = this.#locate(true);
    const slots = this.#slots;
    if (slots[o + 3] === EMPTY) {
      const at = this.#keep(line, start, end);
      if (at < 0) return false;
      slots[o] = PK[0];
      slots[o + 1] = PAIR[1];
      slots[o + 2] = PAIR[2];
      slots[o + 3] = UNSEEN | SHARED_FOUND;
      this.#at[o >>> 2] = at;
      this.#entries++;
    } else {
      // Both records hold the same line: one copy names both (the diff joins by value).
      slots[o + 3] = DOUBLE_UNSEEN | DOUBLE | (slots[o + 3] & SHARED) | SHARED_FOUND;
    }
    return true;
  }

  /**
   * The offset of the slot holding the current pair (PK, PAIR), or of the empty slot where it
   * would go: linear probing from the key's hash. `loading`: the slots of the same key passed on
   * the way are marked SHARED, and SHARED_FOUND says whether there were any.
   */
  #locate(loading = false): number {
    pairHash();
    const k = PK[0];
    const b = PAIR[1];
    const c = PAIR[2];
    const slots = this.#slots;
    SHARED_FOUND = 0;
    let i = k & this.#mask;
    for (;;) {
      const o = i * 4;
      const word = slots[o + 3];
      if (word === EMPTY) return o;
      if (slots[o] === k && (word & STATE) !== DEAD) {
        if (slots[o + 1] === b && slots[o + 2] === c) return o;
        if (loading) {
          slots[o + 3] |= SHARED;
          SHARED_FOUND = SHARED;
        }
      }
      i = (i + 1) & this.#mask;
    }
  }

  /** Looks a scanned line (`line[start, end)`, no newline) up, marking its record seen. */
  probeLine(line: Buffer, start: number, end: number): Probe {
    const key = readLine(line, start, end);
    if (key === null) return BAD;
    const o = this.#locate();
    const slots = this.#slots;
    const word = slots[o + 3];
    const state = word & STATE;
    if (state === UNSEEN) {
      // A key two records hold: the scan may show it twice, each time with one record's pair.
      // A 64-bit hash of the key: a collision only reads a row it need not.
      if (!(word & SHARED) || !(this.#keys ??= new HashSet64(0)).add(PK[0], PK[1])) {
        slots[o + 3] = SEEN | (word & (SHARED | DOUBLE));
        return UNCHANGED;
      }
    }
    // Shown: the record is claimed by a scanned row, as the SQL join's (key, fingerprint) match.
    if (state !== EMPTY) slots[o + 3] = AMBIGUOUS | (word & (SHARED | DOUBLE));
    return { kind: 'changed', pk: key[0].toString('utf8', key[1], key[2]) };
  }

  /**
   * The snapshot pairs the scan never showed (records no scanned row claims by key and
   * fingerprint: deleted or changed rows, records of another evaluation version), as the COPY
   * text lines they were loaded from (`pk\tfp\n`), in chunks of about 64 KB. A pair two records
   * hold is listed once.
   */
  *unmatched(): Generator<Buffer> {
    const slots = this.#slots;
    const parts: Buffer[] = [];
    let bytes = 0;
    for (let i = 0; i <= this.#mask; i++) {
      const state = slots[i * 4 + 3] & STATE;
      if (state !== UNSEEN && state !== DOUBLE_UNSEEN) continue;
      const word = this.#at[i];
      const at = word % STRIPPED;
      const seg = this.#segments[Math.floor(at / SEGMENT)];
      const pos = at % SEGMENT;
      const line = seg.subarray(pos, seg.indexOf(0x0a, pos) + 1);
      if (word >= STRIPPED) {
        const tab = line.indexOf(0x09);
        parts.push(line.subarray(0, tab + 1), this.#prefix, line.subarray(tab + 1));
      } else parts.push(line);
      bytes += line.length;
      if (bytes >= 65536) {
        yield Buffer.concat(parts.splice(0));
        bytes = 0;
      }
    }
    if (parts.length) yield Buffer.concat(parts);
  }
}

/** Whether `buf` holds `p` at `at` (a loop: for a prefix of a few bytes, cheaper than a native compare). */
function startsWith(buf: Buffer, at: number, p: Buffer): boolean {
  for (let i = 0; i < p.length; i++) if (buf[at + i] !== p[i]) return false;
  return true;
}

/**
 * Hashes a COPY text line's key into PK and its fingerprint into FP. Returns where the key's
 * bytes lie (the line itself, or its unescaped copy), or null for a NULL or empty key.
 */
function readLine(line: Buffer, start: number, end: number): [Buffer, number, number] | null {
  let tab = -1;
  let escaped = false;
  for (let i = start; i < end; i++) {
    const ch = line[i];
    if (ch === 0x09) {
      if (tab < 0) tab = i;
    } else if (ch === 0x5c) escaped = true;
  }
  LINE_TAB = tab;
  const pkEnd = tab < 0 ? end : tab;
  const fpStart = tab < 0 ? end : tab + 1;
  if (pkEnd === start || (pkEnd - start === 2 && line[start] === 0x5c && line[start + 1] === 0x4e)) return null;
  if (!escaped) {
    hash3(line, start, pkEnd, PK);
    hash3(line, fpStart, end, FP);
    KEY[0] = line;
    KEY[1] = start;
    KEY[2] = pkEnd;
    return KEY;
  }
  // Rare: hashed by value (unescaped), so that any escaping of a key agrees.
  const pk = Buffer.from(copyTextValue(line.toString('utf8', start, pkEnd)), 'utf8');
  const fp = Buffer.from(copyTextValue(line.toString('utf8', fpStart, end)), 'utf8');
  if (pk.length === 0) return null;
  hash3(pk, 0, pk.length, PK);
  hash3(fp, 0, fp.length, FP);
  return [pk, 0, pk.length];
}
const KEY: [Buffer, number, number] = [Buffer.alloc(0), 0, 0];
/** The last line readLine read: its first tab's position (-1: none). */
let LINE_TAB = -1;

const UNCHANGED: Probe = Object.freeze({ kind: 'unchanged' });
const BAD: Probe = Object.freeze({ kind: 'bad' });

/** A set of 64-bit hashes (open addressing, at most half full, growing; (0, 0) stands for empty). */
class HashSet64 {
  #mask: number;
  /** Slot i is [a, b] at 2i. */
  #slots: Uint32Array;
  #n = 0;

  constructor(expected: number) {
    let size = 1024;
    while (size < expected * 2) size *= 2;
    this.#mask = size - 1;
    this.#slots = new Uint32Array(size * 2);
  }

  /** Adds the 64-bit hash (a, b); true when it was there already. */
  add(a: number, b: number): boolean {
    if (a === 0 && b === 0) a = 1;
    const slots = this.#slots;
    let i = a & this.#mask;
    for (;;) {
      const o = i * 2;
      const x = slots[o];
      const y = slots[o + 1];
      if (x === 0 && y === 0) break;
      if (x === a && y === b) return true;
      i = (i + 1) & this.#mask;
    }
    slots[i * 2] = a;
    slots[i * 2 + 1] = b;
    if (++this.#n * 2 >= this.#mask + 1) this.#grow();
    return false;
  }

  #grow(): void {
    const old = this.#slots;
    const size = (this.#mask + 1) * 2;
    this.#mask = size - 1;
    const slots = (this.#slots = new Uint32Array(size * 2));
    for (let j = 0; j < old.length; j += 2) {
      if (old[j] === 0 && old[j + 1] === 0) continue;
      let i = old[j] & this.#mask;
      while (slots[i * 2] !== 0 || slots[i * 2 + 1] !== 0) i = (i + 1) & this.#mask;
      slots[i * 2] = old[j];
      slots[i * 2 + 1] = old[j + 1];
    }
  }
}

/**
 * A COPY text field's value (PostgreSQL `COPY ... TO` text format: `\b \f \n \r \t \v \\`,
 * octal `\ooo`, hex `\xhh`; any other escaped character stands for itself).
 * Source: https://www.postgresql.org/docs/current/sql-copy.html (Text Format).
 */
const SIMPLE_ESCAPES: Record<string, string> = { b: '\b', f: '\f', n: '\n', r: '\r', t: '\t', v: '\v' };

export function copyTextValue(field: string): string {
  if (!field.includes('\\')) return field;
  let out = '';
  const bytes: number[] = [];
  const flush = () => {
    if (bytes.length) out += Buffer.from(bytes).toString('utf8');
    bytes.length = 0;
  };
  for (let i = 0; i < field.length; i++) {
    const ch = field[i];
    if (ch !== '\\' || i + 1 >= field.length) {
      flush();
      out += ch;
      continue;
    }
    const n = field[++i];
    if (n in SIMPLE_ESCAPES) {
      flush();
      out += SIMPLE_ESCAPES[n];
    } else if (n >= '0' && n <= '7') {
      let j = i;
      while (j < i + 3 && j < field.length && field[j] >= '0' && field[j] <= '7') j++;
      bytes.push(parseInt(field.slice(i, j), 8) & 0xff);
      i = j - 1;
    } else if (n === 'x' && /^[0-9a-fA-F]/.test(field[i + 1] ?? '')) {
      const m = /^[0-9a-fA-F]{1,2}/.exec(field.slice(i + 1))![0];
      bytes.push(parseInt(m, 16));
      i += m.length;
    } else {
      flush();
      out += n;
    }
  }
  flush();
  return out;
}

/**
 * A (primary key, fingerprint) pair as the COPY text line PostgreSQL would send for it, without its
 * newline: what addLine reads, for pairs read by a query instead of COPY (the cache's refresh).
 */
export function copyTextLine(pk: string, fp: string | null): Buffer {
  const esc = (v: string) => (/[\\\n\r\t]/.test(v) ? v.replace(/[\\\n\r\t]/g, (c) => ({ '\\': '\\\\', '\n': '\\n', '\r': '\\r', '\t': '\\t' })[c]!) : v);
  return Buffer.from(`${esc(pk)}\t${fp === null ? '\\N' : esc(fp)}`, 'utf8');
}

/**
 * Splits a stream of COPY text chunks into lines: calls `onLine(buffer, start, end)` for each
 * complete line (without its newline). `end()` returns what is left over (a last line without a
 * newline, which COPY never sends) as an error message, or undefined.
 */
export class LineSplitter {
  #rest: Buffer | undefined;
  readonly #onLine: (buf: Buffer, start: number, end: number) => void;
  constructor(onLine: (buf: Buffer, start: number, end: number) => void) {
    this.#onLine = onLine;
  }

  push(chunk: Buffer | string): void {
    const buf = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk;
    let start = 0;
    if (this.#rest) {
      // The line cut at the last chunk's end: joined with its end alone, not the whole chunk
      // (copying every chunk cost a copy of the scan and the garbage of one buffer per chunk).
      const nl = buf.indexOf(0x0a);
      if (nl < 0) {
        this.#rest = Buffer.concat([this.#rest, buf]);
        return;
      }
      const line = Buffer.concat([this.#rest, buf.subarray(0, nl)]);
      this.#rest = undefined;
      this.#onLine(line, 0, line.length);
      start = nl + 1;
    }
    for (;;) {
      const nl = buf.indexOf(0x0a, start);
      if (nl < 0) break;
      this.#onLine(buf, start, nl);
      start = nl + 1;
    }
    if (start < buf.length) this.#rest = Buffer.from(buf.subarray(start));
  }

  end(): string | undefined {
    return this.#rest?.length ? `an unterminated COPY line (${this.#rest.length} bytes)` : undefined;
  }
}

// MurmurHash3 (x86, 32-bit) of buf[start, end) under three seeds in one pass, into `out`.
const C1 = 0xcc9e2d51;
const C2 = 0x1b873593;
const PK = new Uint32Array(3);
const FP = new Uint32Array(3);
const PAIR = new Uint32Array(3);
/** Set by #locate when loading: SHARED if it passed a slot of the same key. */
let SHARED_FOUND = 0;
function hash3(buf: Uint8Array, start: number, end: number, out: Uint32Array): void {
  let h1 = 0x9747b28c;
  let h2 = 0x2f1a3b5d;
  let h3 = 0x61c88647;
  const len = end - start;
  const blocks = start + (len & ~3);
  for (let i = start; i < blocks; i += 4) {
    let k = buf[i] | (buf[i + 1] << 8) | (buf[i + 2] << 16) | (buf[i + 3] << 24);
    k = Math.imul(k, C1);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, C2);
    h1 ^= k;
    h1 = (h1 << 13) | (h1 >>> 19);
    h1 = (Math.imul(h1, 5) + 0xe6546b64) | 0;
    h2 ^= k;
    h2 = (h2 << 13) | (h2 >>> 19);
    h2 = (Math.imul(h2, 5) + 0xe6546b64) | 0;
    h3 ^= k;
    h3 = (h3 << 13) | (h3 >>> 19);
    h3 = (Math.imul(h3, 5) + 0xe6546b64) | 0;
  }
  let k = 0;
  switch (len & 3) {
    case 3:
      k ^= buf[blocks + 2] << 16;
    // falls through
    case 2:
      k ^= buf[blocks + 1] << 8;
    // falls through
    case 1:
      k ^= buf[blocks];
      k = Math.imul(k, C1);
      k = (k << 15) | (k >>> 17);
      k = Math.imul(k, C2);
      h1 ^= k;
      h2 ^= k;
      h3 ^= k;
  }
  out[0] = fmix(h1 ^ len);
  out[1] = fmix(h2 ^ len);
  out[2] = fmix(h3 ^ len);
}

const H53 = new Uint32Array(3);
/** A 53-bit hash (a safe integer, exact in a Float64Array) of buf[start, end): two lanes of hash3. */
export function hash53(buf: Uint8Array, start: number, end: number): number {
  hash3(buf, start, end, H53);
  return H53[0] + (H53[1] & 0x1fffff) * 4294967296;
}

/**
 * PAIR from PK and FP, lane by lane: for a given key the map from the fingerprint's lane to the
 * pair's is a bijection, so two pairs of one key collide only if their fingerprints' 96-bit
 * hashes do.
 */
function pairHash(): void {
  PAIR[0] = fmix((PK[0] + Math.imul(FP[0], 0x9e3779b1)) | 0);
  PAIR[1] = fmix((PK[1] + Math.imul(FP[1], 0x85ebca77)) | 0);
  PAIR[2] = fmix((PK[2] + Math.imul(FP[2], 0xc2b2ae3d)) | 0);
}

function fmix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
