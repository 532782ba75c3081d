import type { ConnectorType } from './types.ts';
import { declaredObjectsSchema } from './declared-objects.ts';
import { httpAuthConfigSchema, HTTP_AUTH_SECRET_SPECS } from './destinations/http-auth.ts';
import { openHttpDestination } from './destinations/http.ts';
import { MAX_RESPONSE_BYTES } from '../lib/http-client.ts';
import { httpLookupsSchema } from './destinations/http-lookup.ts';

// Generic REST destination. The schema below is the public shape of its config; the
// implementation is destinations/http.ts.
const operationSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['method', 'path'],
  properties: {
    method: { type: 'string', enum: ['POST', 'PUT', 'PATCH', 'DELETE'] },
    /** Path template relative to baseUrl, e.g. `/contacts/{{id}}` (row mode) or `/contacts/batch`. */
    path: { type: 'string', minLength: 1, maxLength: 2000 },
    /** `row`: one request per row; `batch`: one request carrying an array of rows. */
    mode: { type: 'string', enum: ['row', 'batch'], default: 'row' },
    /** Batch mode: JSON key wrapping the array (`{"inputs": [...]}`); omitted → a bare array. */
    batchKey: { type: 'string', minLength: 1, maxLength: 200 },
    /** Batch mode: how to read per-row outcomes from the response. */
    results: {
      type: 'object',
      additionalProperties: false,
      required: ['pointer'],
      properties: {
        /** JSON pointer to the results array, one entry per row in request order (e.g. `/results`). */
        pointer: { type: 'string', maxLength: 500 },
        /** Field of a result entry holding an HTTP-like status (207 Multi-Status style). */
        statusField: { type: 'string', maxLength: 200 },
        /** Field of a result entry that is true when the row succeeded. */
        okField: { type: 'string', maxLength: 200 },
        /** Field of a result entry holding the error message. */
        errorField: { type: 'string', maxLength: 200 },
        /** Field of a result entry holding the record's id in the destination (default `id`). */
        idField: { type: 'string', maxLength: 200 },
      },
    },
    /** Row mode: field of the response body holding the record's id (default `id`). */
    idField: { type: 'string', maxLength: 200 },
    /**
     * JSON pointer (RFC 6901) to a value that must be `true` for a 2xx answer to count as a success,
     * e.g. `/ok` for APIs that answer `200 {"ok": false, "error": "…"}` (row and batch mode).
     */
    okPointer: { type: 'string', maxLength: 500, pattern: '^(/.*)?$' },
    /** JSON pointer to an error message or code that, when present and not null/false/"", fails a 2xx answer (e.g. `/error`). */
    errorPointer: { type: 'string', maxLength: 500, pattern: '^(/.*)?$' },
  },
};

export const httpType: ConnectorType = {
  type: 'http',
  label: 'HTTP (generic REST)',
  roles: ['destination'],
  configSchema: {
    type: 'object',
    additionalProperties: false,
    required: ['baseUrl', 'objects'],
    properties: {
      baseUrl: { type: 'string', format: 'uri', pattern: '^https?://', maxLength: 2000 },
      auth: httpAuthConfigSchema,
      headers: { type: 'object', additionalProperties: { type: 'string', maxLength: 4000 }, maxProperties: 50 },
      timeoutMs: { type: 'integer', minimum: 100, maximum: 300_000, default: 30_000 },
      /** Largest response body read, in bytes (10 MiB at most; all responses in flight also share one per-process budget). */
      maxResponseBytes: { type: 'integer', minimum: 1024, maximum: MAX_RESPONSE_BYTES, default: 5_242_880 },
      maxBatchSize: { type: 'integer', minimum: 1, maximum: 10_000, default: 100 },
      maxRequestsPerSecond: { type: 'number', exclusiveMinimum: 0, maximum: 10_000 },
      /** Row mode: requests in flight at once within one batch. */
      rowConcurrency: { type: 'integer', minimum: 1, maximum: 64, default: 8 },
      lookups: httpLookupsSchema,
      objects: declaredObjectsSchema(operationSchema),
    },
  },
  secrets: HTTP_AUTH_SECRET_SPECS,
  capabilities: {
    operations: ['insert', 'update', 'upsert', 'delete'],
    modes: ['insert', 'update', 'upsert', 'mirror'],
    maxBatchSize: 10_000,
    supportsDelete: true,
    defaultMaxRequestsPerSecond: 50,
    lookup: true,
    maxLookupBatchSize: 100,
  },
  openDestination: (config, secrets, ctx) => openHttpDestination(config, secrets, ctx),
};
