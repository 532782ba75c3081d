// A tiny stand-in for a CRM, for the README walk-through: it accepts batch upserts at
// POST /contacts/batch/upsert ({"inputs": [...]}) and prints what it receives.
//   node scripts/demo-receiver.ts [port]
import { createServer } from 'node:http';

const port = Number(process.argv[2] ?? 4000);
const contacts = new Map<string, unknown>();
createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    if (req.method === 'POST' && req.url === '/contacts/batch/upsert') {
      const { inputs } = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { inputs: { email?: string }[] };
      const results = inputs.map((c) => {
        if (!c.email?.includes('@')) return { ok: false, error: `invalid email "${c.email ?? ''}"` };
        contacts.set(c.email, c);
        return { ok: true };
      });
      console.log(`received ${inputs.length} contacts (${contacts.size} stored):`, JSON.stringify(inputs.slice(0, 3)));
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ results }));
      return;
    }
    res.writeHead(404, { 'content-type': 'application/json' }).end('{"message":"not found"}');
  });
}).listen(port, '127.0.0.1', () => console.log(`demo receiver on http://127.0.0.1:${port}`));
