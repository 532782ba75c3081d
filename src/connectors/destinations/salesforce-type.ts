import type { ConnectorType } from '../types.ts';
import { oauthConfigSchema } from '../oauth/protocol.ts';
import { OAUTH_SECRET_SPECS } from '../oauth/token-manager.ts';
import { openSalesforceDestination, salesforceCapabilities } from './salesforce.ts';

// Salesforce (REST API + Bulk API 2.0). The schema below is the public shape of its config; the
// implementation is salesforce.ts. Credentials: the OAuth web server flow (POST
// /v1/connections/{ref}/oauth/start) with the connected app's client from
// BACKHAUL_SALESFORCE_CLIENT_ID / BACKHAUL_SALESFORCE_CLIENT_SECRET, or a session token as the
// `accessToken` secret with config.instanceUrl. With OAuth, the token response names the instance
// (`instance_url`), kept as the `instanceUrl` secret. Sandboxes: config.oauth.authorizeUrl and
// tokenUrl on https://test.salesforce.com (or the org's My Domain).
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
      oauth: oauthConfigSchema,
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
    ...OAUTH_SECRET_SPECS,
    { name: 'instanceUrl', required: false, description: 'Instance URL from the OAuth token response (instance_url); overrides config.instanceUrl' },
  ],
  capabilities: salesforceCapabilities(),
  // Source: Salesforce Help, "OAuth 2.0 Web Server Flow for Web App Integration" (PKCE supported;
  // client credentials in the body or HTTP Basic) and "OAuth 2.0 Refresh Token Flow for Renewed
  // Sessions" (the answer has instance_url and no expires_in; the refresh token is not rotated
  // unless the app enables rotation). `refresh_token` must be asked for to get one.
  oauth: {
    name: 'salesforce',
    authorizeUrl: 'https://login.salesforce.com/services/oauth2/authorize',
    tokenUrl: 'https://login.salesforce.com/services/oauth2/token',
    scopes: ['api', 'refresh_token'],
    clientAuth: 'body',
    keepFields: { instance_url: 'instanceUrl' },
    // Sandboxes log in at test.salesforce.com; orgs with My Domain at <domain>.my.salesforce.com.
    trustedTokenHosts: ['test.salesforce.com', '.my.salesforce.com'],
  },
  openDestination: (config, secrets, ctx) => openSalesforceDestination(config, secrets, ctx),
};
