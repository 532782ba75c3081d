import { eq, sql } from 'drizzle-orm';
import { apiKeys, workspaces } from '../db/schema.ts';
import type { Db } from '../db/client.ts';
import { hashToken } from '../lib/crypto.ts';
import { newId } from '../lib/ids.ts';
import { insertApiKey } from './api-keys.ts';

// First start on an empty database: workspace `default` and its owner key. The key is printed
// once by the caller (or comes from BACKHAUL_BOOTSTRAP_API_KEY) and only its hash is stored.
// A transaction-level advisory lock makes concurrent first starts create exactly one.

export async function bootstrap(db: Db, opts: { token?: string }): Promise<{ workspaceId: string; token?: string } | null> {
  return db.transaction(async (tx) => {
    await tx.execute(sql`select pg_advisory_xact_lock(7231944002)`);
    const existing = await tx.select({ id: workspaces.id }).from(workspaces).where(eq(workspaces.slug, 'default')).limit(1);
    if (existing.length) {
      // With a bootstrap key configured, make sure it exists (e.g. set after the first start).
      if (opts.token) {
        const found = await tx.select({ id: apiKeys.id }).from(apiKeys).where(eq(apiKeys.tokenHash, hashToken(opts.token))).limit(1);
        if (!found.length) await insertApiKey(tx, existing[0].id, { name: 'bootstrap (BACKHAUL_BOOTSTRAP_API_KEY)', scopes: ['admin'], owner: true, token: opts.token });
      }
      return null;
    }
    const id = newId('workspace');
    await tx.insert(workspaces).values({ id, slug: 'default', name: 'Default' });
    const key = await insertApiKey(tx, id, { name: 'bootstrap owner key', scopes: ['admin'], owner: true, token: opts.token });
    return { workspaceId: id, token: opts.token ? undefined : key.token };
  });
}
