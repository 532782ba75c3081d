import type { ConnectorType } from '../types.ts';
import { oauthConfigSchema } from '../oauth/protocol.ts';
import { OAUTH_SECRET_SPECS } from '../oauth/token-manager.ts';
import { HUBSPOT_BATCH_LIMIT, HUBSPOT_DEFAULT_RPS, openHubSpotDestination } from './hubspot.ts';

// HubSpot CRM (destinations/hubspot.ts). Credentials: a private app's access token in the
// `accessToken` secret, or the OAuth flow (POST /v1/connections/{ref}/oauth/start) with the app's
// client from BACKHAUL_HUBSPOT_CLIENT_ID / BACKHAUL_HUBSPOT_CLIENT_SECRET.

export const hubspotType: ConnectorType = {
  type: 'hubspot',
  label: 'HubSpot CRM',
  roles: ['destination'],
  configSchema: {
    type: 'object',
    additionalProperties: false,
    properties: {
      baseUrl: { type: 'string', format: 'uri', pattern: '^https?://', maxLength: 2000, default: 'https://api.hubapi.com', description: 'API host (tests, proxies)' },
      oauth: oauthConfigSchema,
      accountTimeZone: { type: 'string', minLength: 1, maxLength: 64, default: 'UTC', description: "The HubSpot account's time zone (IANA): its daily API limit resets at midnight there" },
      timeoutMs: { type: 'integer', minimum: 100, maximum: 300_000, default: 30_000 },
      maxResponseBytes: { type: 'integer', minimum: 1024, maximum: 104_857_600, default: 10_485_760 },
      maxRequestsPerSecond: { type: 'number', exclusiveMinimum: 0, maximum: 1000, description: `Default rate of syncs to this account (default ${HUBSPOT_DEFAULT_RPS}: HubSpot's lowest burst limit, 100 requests per 10 s)` },
    },
  },
  secrets: OAUTH_SECRET_SPECS,
  capabilities: {
    operations: ['insert', 'update', 'upsert', 'delete'],
    modes: ['insert', 'update', 'upsert', 'mirror'],
    maxBatchSize: HUBSPOT_BATCH_LIMIT,
    supportsDelete: true,
    defaultMaxRequestsPerSecond: HUBSPOT_DEFAULT_RPS,
    lookup: true,
    maxLookupBatchSize: HUBSPOT_BATCH_LIMIT,
  },
  oauth: {
    name: 'hubspot',
    authorizeUrl: 'https://app.hubspot.com/oauth/authorize',
    tokenUrl: 'https://api.hubapi.com/oauth/v3/token',
    scopes: ['oauth', 'crm.objects.contacts.read', 'crm.objects.contacts.write', 'crm.objects.companies.read', 'crm.objects.companies.write', 'crm.objects.deals.read', 'crm.objects.deals.write', 'crm.objects.owners.read', 'crm.schemas.contacts.read', 'crm.schemas.companies.read', 'crm.schemas.deals.read'],
    optionalScopesParam: 'optional_scope',
    optionalScopes: ['tickets', 'crm.objects.custom.read', 'crm.objects.custom.write', 'crm.schemas.custom.read'],
    clientAuth: 'body',
  },
  openDestination: (config, secrets, ctx) => openHubSpotDestination(config, secrets, ctx),
};
