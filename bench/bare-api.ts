// The API baseline: a bare fastify app answering the same JSON bodies Backhaul's routes
// returned (captured just before), with no auth, no database, no validation.
// Usage: node bench/bare-api.ts <port> <json file {"/path": body, …}>
import { readFileSync } from 'node:fs';
import Fastify from 'fastify';

const [port, file] = process.argv.slice(2);
const routes = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
const app = Fastify({ logger: false });
for (const [path, body] of Object.entries(routes)) {
  const text = JSON.stringify(body);
  // The same work as a real handler that has its object: serialise it per request.
  const obj = JSON.parse(text) as unknown;
  app.get(path, async (_req, reply) => reply.type('application/json; charset=utf-8').send(JSON.stringify(obj)));
}
await app.listen({ host: '127.0.0.1', port: Number(port) });
process.stdout.write(`${JSON.stringify({ ready: true })}\n`);
process.on('SIGTERM', () => void app.close().then(() => process.exit(0)));
