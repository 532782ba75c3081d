import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { parse } from 'csv-parse/sync';
import { stringify } from 'csv-stringify/sync';
import { ConnectorError } from '../../errors.ts';
import type { RowResult, WireExchange, WriteCheckpoint } from '../types.ts';
import { MAX_ROW_MESSAGE, parseJson } from './http-response.ts';
import { describeErrors, type SalesforceClient } from './salesforce-client.ts';

// Salesforce Bulk API 2.0 ingest jobs: create → upload CSV (one PUT per job) → UploadComplete →
// poll until JobComplete/Failed/Aborted → read successfulResults, failedResults and
// unprocessedrecords, and map them back to the input rows. Results come in no particular order
// ("The order of records in the response is not guaranteed"), so rows are matched by the values
// of their key columns (the external id, or Id), which the result CSVs echo.
// Source: Bulk API 2.0 and Bulk API Developer Guide — Create a Job, Upload Job Data, Upload
// Complete, Get Job Info, Get Job Successful/Failed/Unprocessed Record Results, Prepare CSV Files.
//
// Resumability: the job id is stored in the write's checkpoint under a key derived from the
// job's content before anything is uploaded. A worker killed mid-job resumes by polling that job:
// an Open job (killed before UploadComplete, so nothing was processed) is aborted and replaced;
// a closed one is never uploaded again.

export type BulkOperation = 'insert' | 'update' | 'upsert' | 'delete';

export interface BulkJobSpec {
  object: string;
  operation: BulkOperation;
  externalIdFieldName?: string;
  /** CSV header: field API names. */
  columns: string[];
  /** One CSV row per record, cells already encoded (see `bulkCell`). */
  rows: string[][];
  /** Columns whose values identify a row in the result CSVs (e.g. the external id, or Id). */
  keyColumns: string[];
  /** Index of each spec row in the WriteRequest (for the row debugger). */
  rowIndexes: number[];
}

export interface BulkOptions {
  pollMinMs: number;
  pollMaxMs: number;
  /** Give up polling after this long (retryable: the next attempt resumes the same job). */
  timeoutMs: number;
  maxResultBytes: number;
  checkpoint?: WriteCheckpoint;
  signal?: AbortSignal;
}

interface JobInfo {
  id: string;
  state: string;
  contentUrl?: string;
  errorMessage?: string;
  numberRecordsProcessed?: number;
  numberRecordsFailed?: number;
}

const TERMINAL = new Set(['JobComplete', 'Failed', 'Aborted']);

/**
 * A CSV cell for a payload value. In Bulk API CSV an empty cell leaves a field unchanged and
 * `#N/A` sets it to null, so null (and '', which the REST API also stores as null) become `#N/A`;
 * a field absent from the payload stays empty.
 */
export function bulkCell(v: unknown): string {
  if (v === undefined) return '';
  if (v === null || v === '') return '#N/A';
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'bigint' || typeof v === 'boolean') return String(v);
  if (v instanceof Date) return v.toISOString();
  return JSON.stringify(v);
}

/** The checkpoint key of a job: a hash of everything that defines it (object, operation, external id, CSV). */
export function bulkJobKey(spec: BulkJobSpec, csv: string): string {
  const h = createHash('sha256').update(JSON.stringify([spec.object, spec.operation, spec.externalIdFieldName ?? '', csv])).digest('hex');
  return `salesforce-bulk:${h.slice(0, 40)}`;
}

/**
 * The job's CSV (RFC 4180, LF line endings as the job declares). csv-stringify quotes values with
 * commas, quotes and LF; a lone CR must be quoted too (or it reads as a line break), and edge
 * whitespace is quoted so that no reader trims it.
 */
export function bulkCsv(spec: BulkJobSpec): string {
  return stringify([spec.columns, ...spec.rows], { record_delimiter: 'unix', eof: true, quoted_match: [/\r/, /^\s|\s$/] });
}

/** `sf__Error` is `STATUS_CODE:message[:fields] --`; split off the code. */
export function parseSfError(s: string): { code: string; message: string } {
  const m = /^([A-Z][A-Z0-9_]+):(.*)$/s.exec(s.trim());
  const text = (m ? m[2] : s).replace(/\s*--\s*$/, '').trim();
  return { code: m ? m[1] : 'bulk_error', message: (text || s).slice(0, MAX_ROW_MESSAGE) };
}

/** Salesforce codes for failures that a later attempt may not hit (locks, timeouts). */
export const RETRYABLE_ROW_CODES = new Set(['UNABLE_TO_LOCK_ROW', 'REQUEST_RUNNING_TOO_LONG', 'SERVER_UNAVAILABLE', 'API_TEMPORARILY_UNAVAILABLE', 'TOO_MANY_APEX_REQUESTS']);

export class BulkJobRunner {
  readonly #client: SalesforceClient;

  constructor(client: SalesforceClient) {
    this.#client = client;
  }

  /** Runs (or resumes) the job of `spec`; returns one result per spec row. */
  async run(spec: BulkJobSpec, opts: BulkOptions, exchanges: WireExchange[]): Promise<RowResult[]> {
    const csv = bulkCsv(spec);
    const key = bulkJobKey(spec, csv);
    let job: JobInfo | undefined;
    const known = await opts.checkpoint?.get(key);
    if (known) {
      job = await this.#jobInfo(known, opts, exchanges, true);
      if (job?.state === 'Open') {
        // Killed before UploadComplete: Salesforce processes nothing until then, so the job can
        // be dropped and the data sent again in a new one.
        await this.#setState(job.id, 'Aborted', opts, exchanges);
        job = undefined;
      }
    }
    if (!job) {
      job = await this.#create(spec, opts, exchanges);
      // Durable before the upload: from here on a restart polls this job.
      await opts.checkpoint?.set(key, job.id);
      await this.#upload(job, csv, spec, opts, exchanges);
      job = await this.#setState(job.id, 'UploadComplete', opts, exchanges);
    }
    job = await this.#poll(job, opts, exchanges);
    return this.#results(job, spec, opts, exchanges);
  }

  async #call(method: string, path: string, what: string, opts: BulkOptions, exchanges: WireExchange[], extra: { body?: string; contentType?: string; accept?: string; maxResponseBytes?: number; rowIndexes?: number[] } = {}) {
    const res = await this.#client.send({ method, path, signal: opts.signal, ...extra }, exchanges);
    const err = this.#client.requestError(res, what);
    if (err) throw err;
    return res;
  }

  async #create(spec: BulkJobSpec, opts: BulkOptions, exchanges: WireExchange[]): Promise<JobInfo> {
    const body = JSON.stringify({
      object: spec.object,
      operation: spec.operation,
      ...(spec.externalIdFieldName ? { externalIdFieldName: spec.externalIdFieldName } : {}),
      contentType: 'CSV',
      columnDelimiter: 'COMMA',
      lineEnding: 'LF',
    });
    const res = await this.#call('POST', '/jobs/ingest', `creating a Bulk API 2.0 ${spec.operation} job on ${spec.object}`, opts, exchanges, { body });
    const job = parseJson(res.body) as JobInfo | undefined;
    if (res.status < 200 || res.status >= 300 || !job?.id) {
      throw new ConnectorError('bulk_job_refused', `Salesforce refused the Bulk API 2.0 job on ${spec.object} (${res.status}): ${describeErrors(res.status, res.body)}`, {
        classification: 'fatal',
        hint: 'Check the object, the external id field and that the connected user has the "Bulk API Hard Delete"/object permissions the operation needs.',
      });
    }
    return job;
  }

  async #upload(job: JobInfo, csv: string, spec: BulkJobSpec, opts: BulkOptions, exchanges: WireExchange[]): Promise<void> {
    const path = job.contentUrl ? `/${job.contentUrl.replace(/^\/+/, '')}` : `/jobs/ingest/${job.id}/batches`;
    const res = await this.#call('PUT', path, `uploading the data of job ${job.id}`, opts, exchanges, { body: csv, contentType: 'text/csv', rowIndexes: spec.rowIndexes });
    if (res.status !== 201 && (res.status < 200 || res.status >= 300)) {
      throw new ConnectorError('bulk_upload_refused', `Salesforce refused the CSV of job ${job.id} (${res.status}): ${describeErrors(res.status, res.body)}`, {
        classification: 'fatal',
        hint: 'The job data could not be uploaded; see the message.',
      });
    }
  }

  async #setState(id: string, state: 'UploadComplete' | 'Aborted', opts: BulkOptions, exchanges: WireExchange[]): Promise<JobInfo> {
    const res = await this.#call('PATCH', `/jobs/ingest/${id}`, `setting job ${id} to ${state}`, opts, exchanges, { body: JSON.stringify({ state }) });
    const job = parseJson(res.body) as JobInfo | undefined;
    if (res.status < 200 || res.status >= 300 || !job?.id) {
      throw new ConnectorError('bulk_job_refused', `Salesforce refused to set job ${id} to ${state} (${res.status}): ${describeErrors(res.status, res.body)}`, { classification: 'fatal' });
    }
    return job;
  }

  /** Job info, or undefined (with `missingOk`) when the job is gone (deleted, or older than 7 days). */
  async #jobInfo(id: string, opts: BulkOptions, exchanges: WireExchange[], missingOk = false): Promise<JobInfo | undefined> {
    const res = await this.#call('GET', `/jobs/ingest/${encodeURIComponent(id)}`, `reading job ${id}`, opts, exchanges);
    if (res.status === 404 && missingOk) return undefined;
    const job = parseJson(res.body) as JobInfo | undefined;
    if (res.status !== 200 || !job?.state) {
      throw new ConnectorError('bulk_job_unreadable', `Salesforce answered ${res.status} reading job ${id}: ${describeErrors(res.status, res.body)}`, { classification: 'retryable' });
    }
    return job;
  }

  async #poll(job: JobInfo, opts: BulkOptions, exchanges: WireExchange[]): Promise<JobInfo> {
    const deadline = Date.now() + opts.timeoutMs;
    let wait = opts.pollMinMs;
    while (!TERMINAL.has(job.state)) {
      if (Date.now() + wait > deadline) {
        throw new ConnectorError('bulk_job_pending', `Bulk API 2.0 job ${job.id} is still ${job.state} after ${Math.round(opts.timeoutMs / 1000)} s.`, {
          classification: 'retryable',
          hint: 'The job keeps running in Salesforce; the next attempt polls the same job instead of uploading again.',
        });
      }
      try {
        await sleep(wait, undefined, { signal: opts.signal });
      } catch {
        throw new ConnectorError('cancelled', `Stopped waiting for Bulk API 2.0 job ${job.id}.`, { classification: 'fatal' });
      }
      wait = Math.min(opts.pollMaxMs, Math.round(wait * 1.5));
      job = (await this.#jobInfo(job.id, opts, exchanges))!;
    }
    return job;
  }

  async #csv(job: JobInfo, kind: 'successfulResults' | 'failedResults' | 'unprocessedrecords', opts: BulkOptions, exchanges: WireExchange[]): Promise<Record<string, string>[]> {
    const res = await this.#call('GET', `/jobs/ingest/${job.id}/${kind}/`, `reading ${kind} of job ${job.id}`, opts, exchanges, { accept: 'text/csv', maxResponseBytes: opts.maxResultBytes });
    if (res.status !== 200) {
      throw new ConnectorError('bulk_results_unreadable', `Salesforce answered ${res.status} reading ${kind} of job ${job.id}: ${describeErrors(res.status, res.body)}`, { classification: 'retryable' });
    }
    if (!res.body.length) return [];
    return parse(res.body, { columns: true, bom: true, skip_empty_lines: true }) as Record<string, string>[];
  }

  async #results(job: JobInfo, spec: BulkJobSpec, opts: BulkOptions, exchanges: WireExchange[]): Promise<RowResult[]> {
    if (job.state === 'Failed' && !job.numberRecordsProcessed) {
      // Refused as a whole (e.g. "InvalidBatch : Field name not found : Foo"): a config problem.
      throw new ConnectorError('bulk_job_failed', `Salesforce failed Bulk API 2.0 job ${job.id}: ${job.errorMessage ?? 'no message'}`, {
        classification: 'fatal',
        hint: 'Check the mapped field names and the external id field of the sync against the object\'s fields.',
      });
    }
    // Rows by key, in input order; duplicates (same key) are interchangeable and taken in turn.
    const byKey = new Map<string, number[]>();
    const colIdx = spec.keyColumns.map((c) => spec.columns.indexOf(c));
    spec.rows.forEach((cells, i) => {
      const k = JSON.stringify(colIdx.map((ci) => cells[ci] ?? ''));
      const list = byKey.get(k);
      if (list) list.push(i);
      else byKey.set(k, [i]);
    });
    const take = (rec: Record<string, string>): number | undefined => {
      const k = JSON.stringify(spec.keyColumns.map((c) => rec[c] ?? ''));
      return byKey.get(k)?.shift();
    };
    const results: (RowResult | undefined)[] = new Array(spec.rows.length);
    for (const rec of await this.#csv(job, 'successfulResults', opts, exchanges)) {
      const i = take(rec);
      if (i !== undefined) results[i] = rec.sf__Id ? { status: 'succeeded', externalId: rec.sf__Id } : { status: 'succeeded' };
    }
    for (const rec of await this.#csv(job, 'failedResults', opts, exchanges)) {
      const i = take(rec);
      if (i === undefined) continue;
      const { code, message } = parseSfError(rec.sf__Error ?? '');
      // A delete of a record that is already gone reached its goal.
      if (spec.operation === 'delete' && (code === 'ENTITY_IS_DELETED' || code === 'INVALID_CROSS_REFERENCE_KEY')) results[i] = { status: 'succeeded' };
      else results[i] = { status: 'rejected', code, message, retryable: RETRYABLE_ROW_CODES.has(code) };
    }
    const unprocessed = job.state === 'JobComplete' ? [] : await this.#csv(job, 'unprocessedrecords', opts, exchanges);
    for (const rec of unprocessed) {
      const i = take(rec);
      if (i !== undefined) results[i] = { status: 'rejected', code: 'not_processed', message: `Bulk API 2.0 job ${job.id} ended ${job.state} before processing this row${job.errorMessage ? `: ${job.errorMessage}` : ''}.`.slice(0, MAX_ROW_MESSAGE), retryable: true };
    }
    return results.map(
      (r) => r ?? { status: 'rejected', code: 'no_result', message: `Bulk API 2.0 job ${job.id} (${job.state}) reported no result for this row.`, retryable: true },
    );
  }
}
