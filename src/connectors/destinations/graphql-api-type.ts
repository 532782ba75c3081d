import type { ConnectorType } from '../types.ts';
import { declaredObjectsSchema } from '../declared-objects.ts';
import { httpAuthConfigSchema, HTTP_AUTH_SECRET_SPECS } from './http-auth.ts';
import { openGraphqlApiDestination } from './graphql-api.ts';

// GraphQL API destination. The schema below is the public shape of its config; the
// implementation is graphql-api.ts (auth is the HTTP destination's, http-auth.ts).
const operationSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['mutation'],
  properties: {
    /** A GraphQL document with exactly one mutation, e.g. `mutation($input: ContactInput!) { upsertContact(input: $input) { contact { id } } }`. */
    mutation: { type: 'string', minLength: 1, maxLength: 20_000 },
    /**
     * Variables per row, as JSON: `"$payload"` is the mapped payload, `"$payload.<field>"` one of
     * its values, `"$recordId"` the destination id known for the row, `"{{field}}"` a template.
     * Default `{ "input": "$payload" }`.
     */
    variables: { type: 'object', maxProperties: 100 },
    /** `row`: one request per row; `batch`: up to batchSize rows per request, as aliased copies of the mutation. */
    mode: { type: 'string', enum: ['row', 'batch'], default: 'row' },
    batchSize: { type: 'integer', minimum: 1, maximum: 1000, default: 50 },
    /** Dot path inside the mutation field's result to the record's id (default `id`). */
    idPath: { type: 'string', maxLength: 500 },
    /** Dot path inside the mutation field's result to a list of user errors (e.g. `userErrors`). */
    userErrorsPath: { type: 'string', maxLength: 500 },
  },
};


export const graphqlApiType: ConnectorType = {
  type: 'graphql',
  label: 'GraphQL API',
  roles: ['destination'],
  configSchema: {
    type: 'object',
    additionalProperties: false,
    required: ['url', 'objects'],
    properties: {
      url: { type: 'string', format: 'uri', pattern: '^https?://', maxLength: 2000 },
      auth: httpAuthConfigSchema,
      headers: { type: 'object', additionalProperties: { type: 'string', maxLength: 4000 }, maxProperties: 50 },
      timeoutMs: { type: 'integer', minimum: 100, maximum: 300_000, default: 30_000 },
      maxResponseBytes: { type: 'integer', minimum: 1024, maximum: 104_857_600, default: 5_242_880 },
      maxBatchSize: { type: 'integer', minimum: 1, maximum: 10_000, default: 100 },
      maxRequestsPerSecond: { type: 'number', exclusiveMinimum: 0, maximum: 10_000, default: 10 },
      rowConcurrency: { type: 'integer', minimum: 1, maximum: 64, default: 8 },
      /** `extensions.code` values of field errors worth retrying (default THROTTLED, RATE_LIMITED, TOO_MANY_REQUESTS, SERVICE_UNAVAILABLE, TIMEOUT, TIMED_OUT). */
      retryableErrorCodes: { type: 'array', maxItems: 50, items: { type: 'string', minLength: 1, maxLength: 100 } },
      objects: declaredObjectsSchema(operationSchema),
    },
  },
  secrets: HTTP_AUTH_SECRET_SPECS,
  capabilities: {
    operations: ['insert', 'update', 'upsert', 'delete'],
    modes: ['insert', 'update', 'upsert', 'mirror'],
    maxBatchSize: 10_000,
    supportsDelete: true,
    defaultMaxRequestsPerSecond: 10,
  },
  openDestination: (config, secrets, ctx) => openGraphqlApiDestination(config, secrets, ctx),
};
