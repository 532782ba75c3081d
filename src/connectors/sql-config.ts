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
  /**
   * PostgreSQL only: answer a server's request for the password in clear text on a connection
   * without TLS. Default false: such a request fails the connection (`cleartext_password_refused`).
   */
  allowCleartextPassword?: boolean;
}

export function sqlDatabaseConfigSchema(defaultPort: number, opts: { postgres?: boolean } = {}): Record<string, unknown> {
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
      ...(opts.postgres
        ? {
            allowCleartextPassword: {
              type: 'boolean',
              default: false,
              description: 'Send the password when the server asks for it in clear text on a connection without TLS (off by default: such a request fails the connection).',
            },
          }
        : {}),
    },
  };
}
