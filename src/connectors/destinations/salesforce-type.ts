import type { ConnectorType } from '../types.ts';
import { openSalesforceDestination, salesforceCapabilities } from './salesforce.ts';

// Salesforce (REST API + Bulk API 2.0). The schema below is the public shape of its config; the
// implementation is salesforce.ts. With OAuth, the token response names the instance
// (`instance_url`), kept as the `instanceUrl` secret; with a static token, set config.instanceUrl.
export const salesforceType: ConnectorType = {
  type: 'salesforce',
  label: 'Salesforce',
  roles: ['destination'],
  configSchema: {
    type: 'object',
    additionalProperties: false,
    properties: {
      /** My Domain URL, e.g. https://acme.my.salesforce.com (OAuth connections get it from the token). */
      instanceUrl: { type: 'string', format: 'uri', pattern: '^https?://', maxLength: 2000 },
      /** REST API version (Salesforce supports each for at least three years). */
      apiVersion: { type: 'string', pattern: '^v[0-9]{2,3}\\.0$', default: 'v62.0' },
      timeoutMs: { type: 'integer', minimum: 1000, maximum: 600_000, default: 60_000 },
      maxResponseBytes: { type: 'integer', minimum: 1024, maximum: 104_857_600, default: 10_485_760 },
      maxRequestsPerSecond: { type: 'number', exclusiveMinimum: 0, maximum: 1000, default: 10 },
      /** Wait after REQUEST_LIMIT_EXCEEDED on the org's 24-hour allocation before retrying. */
      requestLimitBackoffMs: { type: 'integer', minimum: 1000, maximum: 86_400_000, default: 600_000 },
      /** Batches of at least this many rows go through Bulk API 2.0 instead of sObject Collections. */
      bulkThreshold: { type: 'integer', minimum: 1, maximum: 100_000_000, default: 10_000 },
      /** Largest batch (rows) for one Bulk API 2.0 job (one upload: keep its CSV under 100 MB). */
      bulkMaxRows: { type: 'integer', minimum: 1, maximum: 10_000_000, default: 100_000 },
      /** First wait between polls of a bulk job; grows ×1.5 up to bulkPollMaxIntervalMs. */
      bulkPollIntervalMs: { type: 'integer', minimum: 1, maximum: 600_000, default: 2000 },
      bulkPollMaxIntervalMs: { type: 'integer', minimum: 1, maximum: 3_600_000, default: 30_000 },
      /** Stop waiting for one bulk job after this long (the next attempt resumes the same job). */
      bulkTimeoutMs: { type: 'integer', minimum: 1000, maximum: 86_400_000, default: 1_800_000 },
      /** Largest CSV uploaded to one job; a larger batch is split over several jobs. */
      bulkMaxUploadBytes: { type: 'integer', minimum: 1024, maximum: 100_000_000, default: 100_000_000 },
      bulkMaxResultBytes: { type: 'integer', minimum: 1024, maximum: 2_147_483_647, default: 268_435_456 },
    },
  },
  secrets: [
    { name: 'accessToken', required: false, description: 'OAuth access token (set by the OAuth flow, or a session token for automation)' },
    { name: 'instanceUrl', required: false, description: 'Instance URL from the OAuth token response (instance_url); overrides config.instanceUrl' },
    { name: 'refreshToken', required: false, description: 'OAuth refresh token (set by the OAuth flow)' },
  ],
  capabilities: salesforceCapabilities(),
  openDestination: (config, secrets, ctx) => openSalesforceDestination(config, secrets, ctx),
};
