import type { ConnectorType } from './types.ts';
import { postgresType } from './postgres-type.ts';
import { mysqlType } from './mysql-type.ts';
import { httpType } from './http-type.ts';
import { salesforceType } from './destinations/salesforce-type.ts';
import { graphqlApiType } from './destinations/graphql-api-type.ts';
import { hubspotType } from './destinations/hubspot-type.ts';

// The catalog of connector types (GET /v1/connectors). A type's `roles` decide whether a
// connection of it may back a model (source) or a sync (destination).
const TYPES: ConnectorType[] = [postgresType, mysqlType, httpType, hubspotType, salesforceType, graphqlApiType];
const BY_TYPE = new Map(TYPES.map((t) => [t.type, t]));

export function listConnectorTypes(): ConnectorType[] {
  return TYPES;
}

export function getConnectorType(type: string): ConnectorType | undefined {
  return BY_TYPE.get(type);
}
