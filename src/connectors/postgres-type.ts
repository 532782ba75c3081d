import type { ConnectorType } from './types.ts';
import { sqlDatabaseConfigSchema } from './sql-config.ts';
import { openPostgresSource } from './sources/postgres.ts';
import { openPostgresDestination } from './destinations/postgres.ts';

export const postgresType: ConnectorType = {
  type: 'postgres',
  label: 'PostgreSQL',
  roles: ['source', 'destination'],
  configSchema: sqlDatabaseConfigSchema(5432, { postgres: true }),
  secretTargets: ['/host', '/port'],
  secrets: [{ name: 'password', required: false, description: 'Password of the database user' }],
  capabilities: {
    operations: ['insert', 'update', 'upsert', 'delete'],
    modes: ['insert', 'update', 'upsert', 'mirror'],
    maxBatchSize: 5000,
    supportsDelete: true,
  },
  openSource: (config, secrets, ctx) => openPostgresSource(config, secrets, ctx),
  openDestination: (config, secrets, ctx) => openPostgresDestination(config, secrets, ctx),
};
