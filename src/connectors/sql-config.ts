// Config shared by the SQL database connectors (PostgreSQL, MySQL/MariaDB).
export interface SqlDatabaseConfig {
  host: string;
  port: number;
  database: string;
  user: string;
  ssl: 'disable' | 'require' | 'verify-full';
  /** Schema (PostgreSQL) searched for destination tables; default `public`. */
  schema?: string;
  /** Statement timeout for model queries, in ms. */
  statementTimeoutMs: number;
}

export function sqlDatabaseConfigSchema(defaultPort: number): Record<string, unknown> {
  return {
    type: 'object',
    additionalProperties: false,
    required: ['host', 'database', 'user'],
    properties: {
      host: { type: 'string', minLength: 1, maxLength: 255 },
      port: { type: 'integer', minimum: 1, maximum: 65535, default: defaultPort },
      database: { type: 'string', minLength: 1, maxLength: 128 },
      user: { type: 'string', minLength: 1, maxLength: 128 },
      ssl: { type: 'string', enum: ['disable', 'require', 'verify-full'], default: 'disable' },
      schema: { type: 'string', minLength: 1, maxLength: 128 },
      statementTimeoutMs: { type: 'integer', minimum: 100, maximum: 3_600_000, default: 300_000 },
    },
  };
}
