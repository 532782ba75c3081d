// The benchmark's destination: a minimal HTTP sink in its own process, shaped like the fake
// CRM's batch endpoint (POST /contacts/batch/upsert {"inputs":[…]} → {"results":[{"ok":true},…]}).
// Backhaul and the bare baseline pipe both send to it, so its cost is the same for both.
//   GET  /stats  → {"requests", "rows"}      POST /reset → zeroes the counters
// Prints {"port": N} on stdout once listening.
import { createServer } from 'node:http';

let requests = 0;
let rows = 0;
const OK = '{"ok":true}';

const server = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const url = req.url ?? '/';
    if (req.method === 'POST' && url.startsWith('/contacts/batch/')) {
      requests++;
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { inputs: unknown[] };
      const n = body.inputs.length;
      rows += n;
      const out = `{"results":[${new Array(n).fill(OK).join(',')}]}`;
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(out) });
      res.end(out);
      return;
    }
    if (url === '/stats') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ requests, rows }));
      return;
    }
    if (url === '/reset' && req.method === 'POST') {
      requests = 0;
      rows = 0;
      res.writeHead(204);
      res.end();
      return;
    }
    res.writeHead(404, { 'content-type': 'application/json' });
    res.end('{"message":"not found"}');
  });
});
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ port: (server.address() as { port: number }).port })}\n`);
});
process.on('SIGTERM', () => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
});
