import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createHmac, hkdfSync, randomBytes } from 'node:crypto';
import type { Config } from './config.ts';
import { ConfigError } from './config.ts';
import type { SecretBox } from './domain/deps.ts';
import { decrypt, encrypt, parseEncryptionKey } from './lib/crypto.ts';

// The key that seals connection secrets. With an external database it must come from the
// environment; with the embedded database (a local, single-machine setup) one is generated
// into the data directory on first start, with a warning.

export function loadEncryptionKey(config: Config, warn: (msg: string) => void): Buffer {
  if (config.encryptionKey) {
    try {
      return parseEncryptionKey(config.encryptionKey);
    } catch (e) {
      throw new ConfigError([(e as Error).message]);
    }
  }
  if (config.databaseUrl) {
    throw new ConfigError(['BACKHAUL_ENCRYPTION_KEY is required with DATABASE_URL (generate one with `openssl rand -base64 32`).']);
  }
  const file = join(config.dataDir, 'encryption.key');
  if (!existsSync(file)) {
    mkdirSync(config.dataDir, { recursive: true });
    writeFileSync(file, randomBytes(32).toString('base64'), { mode: 0o600 });
    warn(`BACKHAUL_ENCRYPTION_KEY is not set: generated one in ${file}. Back it up: secrets cannot be read without it.`);
  }
  return parseEncryptionKey(readFileSync(file, 'utf8'));
}

export function secretBox(key: Buffer): SecretBox {
  // A separate key for fingerprints (HKDF, RFC 5869), so fingerprints reveal nothing about the sealing key.
  const fpKey = Buffer.from(hkdfSync('sha256', key, Buffer.alloc(0), 'backhaul secret fingerprint v1', 32));
  return {
    seal: (values) => encrypt(key, JSON.stringify(values)),
    open: (sealed) => JSON.parse(decrypt(key, sealed)) as Record<string, unknown>,
    fingerprint: (scope, value) => `fp1_${createHmac('sha256', fpKey).update(scope).update('\u0000').update(JSON.stringify(value)).digest().subarray(0, 16).toString('base64url')}`,
  };
}
