import type { ConnectorType } from './types.ts';
import { sqlDatabaseConfigSchema } from './sql-config.ts';
import { openMysqlSource } from './sources/mysql.ts';
import { openMysqlDestination } from './destinations/mysql.ts';

export const mysqlType: ConnectorType = {
  type: 'mysql',
  label: 'MySQL / MariaDB',
  roles: ['source', 'destination'],
  configSchema: sqlDatabaseConfigSchema(3306),
  secretTargets: ['/host', '/port'],
  secrets: [{ name: 'password', required: false, description: 'Password of the database user' }],
  capabilities: {
    operations: ['insert', 'update', 'upsert', 'delete'],
    modes: ['insert', 'update', 'upsert', 'mirror'],
    maxBatchSize: 5000,
    supportsDelete: true,
  },
  openSource: (config, secrets, ctx) => openMysqlSource(config, secrets, ctx),
  openDestination: (config, secrets, ctx) => openMysqlDestination(config, secrets, ctx),
};
