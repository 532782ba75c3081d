import { parseArgs } from 'node:util';
import { CONFIG_DOCS, ConfigError, loadConfig } from './config.ts';
import { startBackhaul } from './server.ts';
import { connectDatabase } from './db/client.ts';
import { migrate } from './db/migrate.ts';
import { startDatabase } from './server.ts';
import { insertApiKey } from './domain/api-keys.ts';
import { SCOPES, type Scope } from './domain/context.ts';
import { workspaces } from './db/schema.ts';
import { eq, or } from 'drizzle-orm';
import pino from 'pino';

// backhaul serve [--no-worker] | worker | migrate | keys create --workspace W --scope S [--name N]

const HELP = `Usage: backhaul <command>

Commands:
  serve [--no-worker]   HTTP API (REST, GraphQL, docs) and, unless --no-worker, the job worker
  worker                only the job worker
  migrate               apply database migrations and exit
  keys create --workspace <slug|id> --scope <read|write|admin> [--name <name>]
                        create an API key and print its token once

Environment:
${CONFIG_DOCS.map(([k, d, desc]) => `  ${k.padEnd(32)} ${desc} (default: ${d})`).join('\n')}
`;

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  if (!command || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(HELP);
    return;
  }
  const config = loadConfig();
  const logger = pino({ level: config.logLevel });

  if (command === 'serve' || command === 'worker') {
    const { values } = parseArgs({ args: rest, options: { 'no-worker': { type: 'boolean', default: false } } });
    const bh = await startBackhaul({
      config,
      logger,
      api: command === 'serve',
      worker: command === 'worker' || !values['no-worker'],
      handleProcessErrors: true,
      printBootstrapKey: (token) => {
        process.stdout.write(
          `\n  Backhaul created workspace "default" and its owner API key:\n\n    ${token}\n\n  It is shown only this once: store it now.\n\n`,
        );
      },
    });
    if (bh.url) logger.info({ url: bh.url }, 'Backhaul API listening');
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      logger.info({ signal }, 'shutting down');
      const force = setTimeout(() => {
        logger.error('shutdown timed out; exiting');
        process.exit(1);
      }, config.shutdownTimeoutMs + 5000);
      force.unref();
      bh.close().then(
        () => process.exit(0),
        (e) => {
          logger.error({ err: e }, 'shutdown failed');
          process.exit(1);
        },
      );
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    return;
  }

  const { url, embedded } = await startDatabase(config, logger);
  const database = connectDatabase(url, { max: 2 });
  try {
    if (command === 'migrate') {
      const applied = await migrate(database.sql, (m) => logger.info(m));
      process.stdout.write(applied.length ? `applied: ${applied.join(', ')}\n` : 'database is up to date\n');
    } else if (command === 'keys' && rest[0] === 'create') {
      const { values } = parseArgs({ args: rest.slice(1), options: { workspace: { type: 'string', default: 'default' }, scope: { type: 'string', multiple: true }, name: { type: 'string' } } });
      const scopes = (values.scope ?? ['read']) as Scope[];
      const bad = scopes.filter((s) => !SCOPES.includes(s));
      if (bad.length) throw new ConfigError([`--scope ${bad.join(', ')}: expected read, write or admin`]);
      await migrate(database.sql);
      const [ws] = await database.db.select().from(workspaces).where(or(eq(workspaces.slug, values.workspace!), eq(workspaces.id, values.workspace!)));
      if (!ws) throw new ConfigError([`--workspace ${values.workspace}: no such workspace`]);
      const key = await insertApiKey(database.db, ws.id, { name: values.name ?? `cli ${scopes.join('+')}`, scopes });
      process.stdout.write(`${key.token}\n`);
    } else {
      process.stderr.write(`Unknown command "${argv.join(' ')}".\n\n${HELP}`);
      process.exitCode = 2;
    }
  } finally {
    await database.close();
    await embedded?.stop();
  }
}

main(process.argv.slice(2)).catch((e) => {
  if (e instanceof ConfigError) {
    process.stderr.write(`${e.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
