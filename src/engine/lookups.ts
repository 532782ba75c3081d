import { ConnectorError } from '../errors.ts';
import type { LookupOutcome, LookupSpec, MappingSpec } from '../connectors/mapping.ts';
import { normaliseLookupKey, type DestinationConnector, type LookupMatch, type Row } from '../connectors/types.ts';

// Lookup mappings (`{ lookup: { object, matchField, sourceColumn, resultField } }`) resolved for a
// run. Before a batch of source rows is mapped, `prepare` collects the distinct values of the
// lookup columns it has not resolved yet and asks the destination for them in batches of the
// connector's size; the answers are cached for the rest of the run. Mapping then resolves each
// row synchronously from the cache (compileMappings' `lookup` option): no match, one match, or
// several (ambiguous: never an arbitrary pick).

/** How many matching records an ambiguity message names. */
const NAMED_MATCHES = 5;

interface Group {
  key: string;
  object: string;
  matchField: string;
  resultField: string;
  caseInsensitive: boolean;
  /** Source columns whose values this group resolves. */
  columns: Set<string>;
  /** Normalised value → every matching record. */
  cache: Map<string, LookupMatch[]>;
}

const groupKey = (s: LookupSpec) => JSON.stringify([s.object, s.matchField, s.resultField, s.caseInsensitive === true]);
const text = (v: unknown): string => (typeof v === 'string' ? v : v instanceof Date ? v.toISOString() : typeof v === 'object' ? JSON.stringify(v) : String(v));

export interface LookupResolverOptions {
  signal?: AbortSignal;
}

export class LookupResolver {
  readonly #dest: DestinationConnector;
  readonly #groups = new Map<string, Group>();
  readonly #batchSize: number;
  readonly #signal?: AbortSignal;
  /** Destination calls made (for tests and run metrics). */
  calls = 0;

  /**
   * Built from a sync's mappings and its opened destination. Throws ConnectorError fatal
   * `lookup_not_supported` when a mapping is a lookup and the destination cannot look up.
   */
  constructor(mappings: MappingSpec[], dest: DestinationConnector, opts: LookupResolverOptions = {}) {
    this.#dest = dest;
    this.#signal = opts.signal;
    const caps = dest.capabilities();
    this.#batchSize = Math.max(1, caps.maxLookupBatchSize ?? 100);
    for (const m of mappings) {
      if (!('lookup' in m.source)) continue;
      const spec = m.source.lookup;
      if (caps.lookup === false || !dest.lookup) {
        throw new ConnectorError('lookup_not_supported', `Field "${m.destinationField}" uses a lookup mapping, which this destination does not support.`, {
          classification: 'fatal',
          status: 400,
          hint: 'Map the field from a column, a static value or a template instead.',
        });
      }
      const key = groupKey(spec);
      let g = this.#groups.get(key);
      if (!g) {
        g = { key, object: spec.object, matchField: spec.matchField, resultField: spec.resultField, caseInsensitive: spec.caseInsensitive === true, columns: new Set(), cache: new Map() };
        this.#groups.set(key, g);
      }
      g.columns.add(spec.sourceColumn);
    }
  }

  /** Whether any mapping is a lookup (nothing to prepare otherwise). */
  get active(): boolean {
    return this.#groups.size > 0;
  }

  /**
   * Resolves the lookup values of these source rows that are not cached yet, in batches of the
   * connector's maxLookupBatchSize. Throws the destination's ConnectorError (retryable or fatal).
   */
  async prepare(rows: Row[]): Promise<void> {
    for (const g of this.#groups.values()) {
      // Distinct values, by normalised key, keeping one original spelling to send.
      const todo = new Map<string, string>();
      for (const row of rows) {
        for (const col of g.columns) {
          const raw = row[col];
          if (raw === null || raw === undefined || raw === '') continue;
          const value = text(raw);
          const k = normaliseLookupKey(value, g.caseInsensitive);
          if (!g.cache.has(k) && !todo.has(k)) todo.set(k, value);
        }
      }
      const pending = [...todo];
      for (let i = 0; i < pending.length; i += this.#batchSize) {
        const chunk = pending.slice(i, i + this.#batchSize);
        this.calls++;
        const answer = await this.#dest.lookup!({
          object: g.object,
          matchField: g.matchField,
          resultField: g.resultField,
          values: chunk.map(([, v]) => v),
          caseInsensitive: g.caseInsensitive,
          signal: this.#signal,
        });
        // Keyed by each value as sent (the interface's contract); a normalised key is accepted too.
        for (const [k, v] of chunk) g.cache.set(k, answer.get(v) ?? answer.get(k) ?? []);
      }
    }
  }

  /** The mapping compiler's `lookup` option: resolves one value from the cache (prepare first). */
  readonly resolve = (spec: LookupSpec, value: unknown): LookupOutcome => {
    const g = this.#groups.get(groupKey(spec));
    const shown = text(value);
    const matches = g?.cache.get(normaliseLookupKey(shown, g.caseInsensitive));
    if (!g || !matches) {
      // A programming error of the caller (prepare was not called for this row): never silently map.
      return { ok: false, code: 'lookup_not_prepared', message: `The lookup of ${spec.object}.${spec.matchField} = ${JSON.stringify(shown)} was not resolved before mapping.` };
    }
    if (matches.length === 1) return { ok: true, value: matches[0].value };
    if (matches.length === 0) {
      return { ok: false, code: 'lookup_not_found', message: `no ${spec.object} record has ${spec.matchField} = ${JSON.stringify(shown)}${g.caseInsensitive ? ' (compared case-insensitively)' : ''}` };
    }
    const named = matches.slice(0, NAMED_MATCHES).map((m) => (m.id !== undefined ? m.id : JSON.stringify(m.value))).join(', ');
    const more = matches.length > NAMED_MATCHES ? ` and ${matches.length - NAMED_MATCHES} more` : '';
    return {
      ok: false,
      code: 'lookup_ambiguous',
      message: `${matches.length} ${spec.object} records have ${spec.matchField} = ${JSON.stringify(shown)} (ids ${named}${more}); refusing to pick one`,
    };
  };
}
