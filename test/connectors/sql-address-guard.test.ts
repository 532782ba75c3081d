import t from 'tap';
import { createServer } from 'node:net';
import { postgresType } from '../../src/connectors/postgres-type.ts';
import { mysqlType } from '../../src/connectors/mysql-type.ts';
import type { ConnectorType } from '../../src/connectors/types.ts';
import { closedPort, expectCode, mysqlConfig, pgConfig } from '../fakes/databases.ts';

// Issue 13 items 5 and 6: PostgreSQL and MySQL connections go through the address guard
// (resolved host, every address checked, connected to the checked address). A refusal by policy
// answers exactly like a closed port, so /test cannot be used to scan hosts and ports.

const pg = pgConfig();
const secrets: Record<string, string> = pg.password ? { password: pg.password } : {};

async function refusal(type: ConnectorType, config: Record<string, unknown>, deny: boolean) {
  const s = type.openSource!(config, secrets, { denyPrivateNetworks: deny });
  try {
    await s.test();
    return undefined;
  } catch (e) {
    return e as Error & { code?: string; hint?: string; classification?: string };
  } finally {
    await s.close();
  }
}

for (const [name, type, base, port] of [
  ['postgres', postgresType, pg.config, pg.config.port],
  ['mysql', mysqlType, mysqlConfig(), 3306],
] as const) {
  t.test(`${name}: private addresses are refused when denied, like a closed port`, async (t) => {
    // A listener that counts connections: a refused address must never be contacted.
    let contacted = 0;
    const srv = createServer((s) => {
      contacted++;
      s.destroy();
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    t.teardown(() => srv.close());
    const open = (srv.address() as { port: number }).port;
    const closed = await closedPort();

    const closedAllowed = await refusal(type, { ...base, port: closed }, false);
    const closedDenied = await refusal(type, { ...base, port: closed }, true);
    t.equal(closedAllowed?.code, 'connection_refused');
    t.same(
      [closedDenied?.code, closedDenied?.message, closedDenied?.hint, closedDenied?.classification],
      [closedAllowed?.code, closedAllowed?.message, closedAllowed?.hint, closedAllowed?.classification],
      'a closed port and a refusal by policy give the same answer',
    );
    for (const host of ['127.0.0.1', 'localhost', '0.0.0.0', '::ffff:127.0.0.1']) {
      const e = await refusal(type, { ...base, host, port: open }, true);
      t.equal(e?.code, 'connection_refused', `${host} refused when private networks are denied`);
      t.match(e?.message, new RegExp(`ECONNREFUSED .*:${open}$`), 'worded like a closed port');
    }
    t.equal(contacted, 0, 'nothing was contacted');
    // The real database works when private networks are allowed.
    t.equal(await refusal(type, { ...base, port }, false), undefined, 'allowed by default');
  });

  t.test(`${name}: metadata and link-local addresses are always refused`, async (t) => {
    for (const host of ['169.254.169.254', '100.100.100.200', 'fd00:ec2::254', '::ffff:169.254.169.254']) {
      const e = await refusal(type, { ...base, host, port: 80 }, false);
      t.equal(e?.code, 'connection_refused', `${host} refused`);
    }
  });
}
