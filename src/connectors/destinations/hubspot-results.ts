import type { RowResult } from '../types.ts';
import { MAX_ROW_MESSAGE } from './http-response.ts';

// Mapping HubSpot batch answers back to input rows. HubSpot's batch results and errors carry no
// input index (https://developers.hubspot.com/docs/api-reference/error-handling, "Multi-status
// errors"): a result names its record (`id`, its properties, and the `objectWriteTraceId` we sent
// with the input); an error names what it is about in its `context` (`objectWriteTraceId`, `ids`,
// or a property's values). A row is tied to a result or an error only through those; anything
// that cannot be tied is reported as unaccounted, never assigned by position.

/** One input of a batch request, as sent. */
export interface SentInput {
  /** Index of the row in the WriteRequest. */
  row: number;
  /** The objectWriteTraceId sent with it. */
  traceId: string;
  /** The `id` sent (a record id, or the idProperty value). */
  id?: string;
  /** The idProperty sent with it, when `id` is a property value. */
  idProperty?: string;
}

export interface HubSpotBatchError {
  status?: string;
  category?: string;
  subCategory?: unknown;
  message?: string;
  context?: Record<string, unknown>;
  errors?: { message?: string; code?: string; context?: unknown }[];
}

export interface MappedBatch {
  /** Row index → outcome, for every row tied to a result or an error. */
  outcomes: Map<number, RowResult>;
  /** Rows of the request tied to nothing. */
  unaccounted: number[];
  /** Errors that named no input of the request. */
  unattributed: HubSpotBatchError[];
}

const asStrings = (v: unknown): string[] => (Array.isArray(v) ? v.filter((x) => typeof x === 'string' || typeof x === 'number').map(String) : typeof v === 'string' ? [v] : []);

/** The message of a HubSpot error, with its detail errors, for a rejected row. */
export function hubspotErrorMessage(e: HubSpotBatchError): string {
  const details = (e.errors ?? []).map((d) => d.message).filter(Boolean);
  const msg = [e.message, ...details.filter((d) => d !== e.message)].filter(Boolean).join(' — ') || 'HubSpot refused this record.';
  return msg.slice(0, MAX_ROW_MESSAGE);
}

/** A stable code for a rejected row: HubSpot's category (e.g. VALIDATION_ERROR, OBJECT_NOT_FOUND), lower-cased. */
export function hubspotErrorCode(e: HubSpotBatchError): string {
  const c = typeof e.category === 'string' && e.category ? e.category : typeof e.status === 'string' && e.status !== 'error' ? e.status : 'rejected';
  return `hubspot_${c.toLowerCase().replace(/[^a-z0-9]+/g, '_')}`;
}

/**
 * Ties a batch answer's results and errors to the inputs sent. `normalise` is the equality of the
 * idProperty (case-insensitive for e-mails); results are matched by objectWriteTraceId, then by
 * the idProperty's value in the result's properties, then by record id.
 */
export function mapBatchAnswer(inputs: SentInput[], body: { results?: unknown; errors?: unknown }, normalise: (v: string) => string = (v) => v): MappedBatch {
  const byTrace = new Map(inputs.map((i) => [i.traceId, i]));
  const byValue = new Map<string, SentInput[]>();
  for (const i of inputs) {
    if (i.id === undefined) continue;
    const k = i.idProperty ? normalise(i.id) : i.id;
    byValue.set(k, [...(byValue.get(k) ?? []), i]);
  }
  const outcomes = new Map<number, RowResult>();
  const results = Array.isArray(body.results) ? (body.results as Record<string, unknown>[]) : [];
  for (const r of results) {
    const trace = typeof r.objectWriteTraceId === 'string' ? byTrace.get(r.objectWriteTraceId) : undefined;
    let input = trace;
    if (!input) {
      const props = (r.properties ?? {}) as Record<string, unknown>;
      const candidates = inputs.filter((i) => {
        if (outcomes.has(i.row) || i.id === undefined) return false;
        if (i.idProperty) return typeof props[i.idProperty] === 'string' && normalise(props[i.idProperty] as string) === normalise(i.id);
        return String(r.id) === i.id;
      });
      // Two inputs naming the same record cannot be told apart: leave them unaccounted.
      if (candidates.length === 1) input = candidates[0];
    }
    if (input && r.id !== undefined && r.id !== null) outcomes.set(input.row, { status: 'succeeded', externalId: String(r.id) });
    else if (input) outcomes.set(input.row, { status: 'succeeded' });
  }
  const unattributed: HubSpotBatchError[] = [];
  const errors = Array.isArray(body.errors) ? (body.errors as HubSpotBatchError[]) : [];
  for (const e of errors) {
    const ctx = (e.context ?? {}) as Record<string, unknown>;
    const hit = new Set<SentInput>();
    for (const t of asStrings(ctx.objectWriteTraceId)) {
      const i = byTrace.get(t);
      if (i) hit.add(i);
    }
    if (!hit.size) {
      // Errors about records name them by id or by the unique property's value.
      const named = [...asStrings(ctx.ids), ...asStrings(ctx.id), ...inputs.flatMap((i) => (i.idProperty ? asStrings(ctx[i.idProperty]) : []))];
      for (const v of new Set(named)) {
        for (const i of byValue.get(normalise(v)) ?? byValue.get(v) ?? []) hit.add(i);
      }
    }
    if (!hit.size) {
      unattributed.push(e);
      continue;
    }
    const rejected: RowResult = { status: 'rejected', code: hubspotErrorCode(e), message: hubspotErrorMessage(e), retryable: false };
    for (const i of hit) if (!outcomes.has(i.row)) outcomes.set(i.row, rejected);
  }
  return { outcomes, unaccounted: inputs.filter((i) => !outcomes.has(i.row)).map((i) => i.row), unattributed };
}
