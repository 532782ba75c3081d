import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import t from 'tap';
import { freePort } from '../../src/db/embedded.ts';

// freePort feeds a port to a server started later (the embedded PostgreSQL, a test's child
// process). A port from the kernel's ephemeral range can be taken in between by any outgoing
// connection, so the port must lie below that range, and be free when returned.

const ephemeralStart = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);

t.test('ports lie below the ephemeral range and can be listened on', async (t) => {
  const seen = new Set<number>();
  for (let i = 0; i < 40; i++) {
    const port = await freePort();
    seen.add(port);
    t.ok(port >= 1024 && port < ephemeralStart, `${port} is below ${ephemeralStart}`);
    const srv = createServer();
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(port, '127.0.0.1', () => resolve());
    });
    await new Promise<void>((r) => srv.close(() => r()));
  }
  t.ok(seen.size > 30, `drawn at random (${seen.size} distinct of 40)`);
});

t.test('a port something listens on is never returned', async (t) => {
  // Hold every port freePort has returned so far: none may come back while held.
  const held: ReturnType<typeof createServer>[] = [];
  t.teardown(() => held.forEach((s) => s.close()));
  const ports = new Set<number>();
  for (let i = 0; i < 30; i++) {
    const port = await freePort();
    t.notOk(ports.has(port), `${port} was not handed out while in use`);
    ports.add(port);
    const srv = createServer();
    await new Promise<void>((resolve) => srv.listen(port, '127.0.0.1', () => resolve()));
    held.push(srv);
  }
});
