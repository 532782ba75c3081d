// Helpers for "garbage in" sweeps: every path inside a JSON body, and a copy with one path replaced.

/** Every path to a leaf or object in a JSON value (as key lists). */
export function paths(v: unknown, prefix: string[] = []): string[][] {
  if (v === null || typeof v !== 'object') return [prefix];
  const out: string[][] = prefix.length ? [prefix] : [];
  for (const [k, x] of Object.entries(v)) out.push(...paths(x, [...prefix, k]));
  return out;
}

/** A deep copy of `v` with the value at `path` replaced. */
export function setAt(v: unknown, path: string[], value: unknown): unknown {
  const copy = structuredClone(v) as Record<string, unknown>;
  let o: any = copy;
  for (const k of path.slice(0, -1)) o = o[k];
  o[path[path.length - 1]] = value;
  return copy;
}
