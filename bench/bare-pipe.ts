// The throughput baseline: the least a pipe from PostgreSQL to the sink can do. It streams the
// model query with `COPY (…) TO STDOUT`, turns each line into the same JSON object Backhaul
// sends, packs batches of the same size and POSTs them with the same concurrency over a
// keep-alive agent. No staging, no diff, no checkpoints, no per-row results.
// Usage: node bench/bare-pipe.ts '<json {databaseUrl, sql, sinkUrl, batchSize, concurrency, columns}>'
// Prints {"rows", "requests", "ms"} on stdout.
import http from 'node:http';
import postgres from 'postgres';

interface Args {
  databaseUrl: string;
  sql: string;
  sinkUrl: string;
  batchSize: number;
  concurrency: number;
  /** Column order of the query, the field each goes to, and how to type its text. */
  columns: { field: string; type: 'text' | 'int' | 'num' | 'timestamp' }[];
}

const args = JSON.parse(process.argv[2]) as Args;
const agent = new http.Agent({ keepAlive: true, maxSockets: args.concurrency });
const target = new URL('/contacts/batch/upsert', args.sinkUrl);

function unescapeCopy(s: string): string | null {
  if (s === '\\N') return null;
  if (!s.includes('\\')) return s;
  return s.replace(/\\(.)/g, (_, c: string) => (c === 't' ? '\t' : c === 'n' ? '\n' : c === 'r' ? '\r' : c));
}

function post(body: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      target,
      { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } },
      (res) => {
        res.on('data', () => {});
        res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`sink answered ${res.statusCode}`))));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

const sql = postgres(args.databaseUrl, { max: 1, onnotice: () => {} });
const started = performance.now();
let rows = 0;
let requests = 0;
let batch: Record<string, unknown>[] = [];
const inflight = new Set<Promise<void>>();
let failure: unknown;

async function flush(): Promise<void> {
  if (!batch.length) return;
  const body = JSON.stringify({ inputs: batch });
  batch = [];
  while (inflight.size >= args.concurrency) await Promise.race(inflight);
  if (failure) throw failure;
  requests++;
  const p: Promise<void> = post(body)
    .catch((e) => {
      failure ??= e;
    })
    .finally(() => inflight.delete(p));
  inflight.add(p);
}

const stream = await sql.unsafe(`copy (${args.sql}) to stdout`).readable();
let rest = '';
for await (const chunk of stream) {
  const text = rest + (chunk as Buffer).toString('utf8');
  const lines = text.split('\n');
  rest = lines.pop()!;
  for (const line of lines) {
    const cells = line.split('\t');
    const obj: Record<string, unknown> = {};
    for (let i = 0; i < args.columns.length; i++) {
      const c = args.columns[i];
      const v = unescapeCopy(cells[i]);
      obj[c.field] = v === null ? null : c.type === 'int' || c.type === 'num' ? Number(v) : c.type === 'timestamp' ? new Date(v.replace(' ', 'T').replace(/([+-]\d\d)$/, '$1:00')).toISOString() : v;
    }
    batch.push(obj);
    rows++;
    if (batch.length >= args.batchSize) await flush();
  }
}
await flush();
await Promise.all(inflight);
const ms = performance.now() - started;
await sql.end();
agent.destroy();
if (failure) throw failure;
process.stdout.write(`${JSON.stringify({ rows, requests, ms })}\n`);
