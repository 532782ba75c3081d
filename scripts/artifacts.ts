import { loadConfig } from '../src/config.ts';
import { connectDatabase } from '../src/db/client.ts';
import { createServices } from '../src/domain/services.ts';
import { graphqlSdl } from '../src/graphql/schema.ts';
import { buildApp } from '../src/http/app.ts';
import { secretBox } from '../src/secrets.ts';
import { graphqlTypes } from './graphql-types.ts';

/** The generated artifacts, by path. Builds the app without a database (nothing is queried). */
export async function buildArtifacts(): Promise<Record<string, string>> {
  const config = loadConfig({ LOG_LEVEL: 'silent' });
  const database = connectDatabase('postgres://nobody@127.0.0.1:1/none');
  const services = createServices({ database, secrets: secretBox(Buffer.alloc(32)), denyPrivateNetworks: false, hooks: {}, env: {} });
  const app = await buildApp({ config, services, readiness: { checks: {} } });
  try {
    return {
      'openapi/openapi.json': `${JSON.stringify(app.swagger(), null, 2)}\n`,
      'openapi/schema.graphql': graphqlSdl(),
      'src/graphql/generated.ts': await graphqlTypes(),
    };
  } finally {
    await app.close();
    await database.close();
  }
}
