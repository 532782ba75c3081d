// The incremental key scan's comparison, in memory (issue 17). An incremental run must find the
// keys whose (primary key, source fingerprint) matches no snapshot record (new, changed) or is
// ambiguous (a key the scan saw twice, two records holding one key and fingerprint). Done in
// SQL, that is a hash join and an aggregate over every key after the scan has been copied into
// the control database (about 1.9 s at a million keys). Done here, it is a lookup per scanned
// line: the snapshot's pairs are loaded into an open-addressing table of 96-bit hashes (16 bytes
// per slot, at most half full: 32 MB for a million records) while the scan starts, and each
// scanned line probes it; a set of the scanned keys' 64-bit hashes (16 MB) finds keys seen twice.
//
// Both sides arrive as PostgreSQL COPY text lines `pk\tfp\n`. A pair is hashed by its values
// (lines holding a backslash are unescaped first), so escapers that differ in what they escape
// still agree, and equality is the SQL join's: byte equality. Key and fingerprint are hashed
// where they lie (no copy), then combined (pairHash).
//
// Collisions: a changed row would be taken as unchanged only if its pair's 96-bit hash equalled
// a snapshot pair's: about n² / 2⁹⁷ per run (10⁻¹⁷ at a million rows), far below the chance
// that the 64-bit source fingerprint itself missed the change.

/** Snapshot records above which the comparison stays in SQL (the table would pass 64 MB). */
export const FINGERPRINT_INDEX_MAX = 2_000_000;

const EMPTY = 0;
const UNSEEN = 1;
const SEEN = 2;
/** Seen twice, or two snapshot records with this pair: every further sighting is read in full. */
const AMBIGUOUS = 3;

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
  /** Slot i is [h1, h2, h3, state] at 4i: one cache line per probe. */
  #slots: Uint32Array;
  /** The keys the scan has shown. */
  readonly #keys: HashSet64;
  #entries = 0;
  readonly #max: number;

  /** A table that grows to at most `max` pairs (`expected`: a first size, to grow less). */
  constructor(expected = 0, max = FINGERPRINT_INDEX_MAX) {
    this.#max = max;
    this.#keys = new HashSet64(Math.min(expected, max));
    let size = 1024;
    while (size < Math.min(expected, max) * 2) size *= 2;
    this.#mask = size - 1;
    this.#slots = new Uint32Array(size * 4);
  }

  /** Doubles the table, re-placing every pair by its hashes. */
  #grow(): void {
    const old = this.#slots;
    const size = (this.#mask + 1) * 2;
    this.#mask = size - 1;
    const slots = (this.#slots = new Uint32Array(size * 4));
    for (let j = 0; j < old.length; j += 4) {
      if (old[j + 3] === EMPTY) continue;
      let i = old[j] & this.#mask;
      while (slots[i * 4 + 3] !== EMPTY) i = (i + 1) & this.#mask;
      slots.set(old.subarray(j, j + 4), i * 4);
    }
  }

  /** Pairs added. */
  get size(): number {
    return this.#entries;
  }

  /**
   * Adds a snapshot record's pair from one COPY text line (`line[start, end)`, no newline).
   * Returns false, adding nothing, when that would pass `max` pairs.
   */
  addLine(line: Buffer, start: number, end: number): boolean {
    if (readLine(line, start, end) === null) return true;
    if (this.#entries >= this.#max) return false;
    if (this.#entries * 2 >= this.#mask + 1) this.#grow();
    const o = this.#locate();
    const slots = this.#slots;
    if (slots[o + 3] === EMPTY) {
      slots.set(PAIR, o);
      slots[o + 3] = UNSEEN;
      this.#entries++;
    } else {
      slots[o + 3] = AMBIGUOUS;
    }
    return true;
  }

  /**
   * The offset of the slot holding the current pair's hash (pairHash of PK and FP), or of the
   * empty slot where it would go (linear probing).
   */
  #locate(): number {
    pairHash();
    const a = PAIR[0];
    const b = PAIR[1];
    const c = PAIR[2];
    const slots = this.#slots;
    let i = a & this.#mask;
    for (;;) {
      const o = i * 4;
      if (slots[o + 3] === EMPTY || (slots[o] === a && slots[o + 1] === b && slots[o + 2] === c)) return o;
      i = (i + 1) & this.#mask;
    }
  }

  /** Looks a scanned line (`line[start, end)`, no newline) up, marking its record seen. */
  probeLine(line: Buffer, start: number, end: number): Probe {
    const key = readLine(line, start, end);
    if (key === null) return BAD;
    // A key the scan saw before is read in full, whatever its fingerprints (its rows are
    // duplicates). A 64-bit hash of the key: a collision only reads a row it need not.
    if (this.#keys.add(PK[0], PK[1])) return { kind: 'changed', pk: key[0].toString('utf8', key[1], key[2]) };
    const o = this.#locate();
    const slots = this.#slots;
    const state = slots[o + 3];
    if (state === UNSEEN) {
      slots[o + 3] = SEEN;
      return UNCHANGED;
    }
    if (state !== EMPTY) slots[o + 3] = AMBIGUOUS;
    return { kind: 'changed', pk: key[0].toString('utf8', key[1], key[2]) };
  }
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
    let buf = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk;
    if (this.#rest) {
      buf = Buffer.concat([this.#rest, buf]);
      this.#rest = undefined;
    }
    let start = 0;
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
