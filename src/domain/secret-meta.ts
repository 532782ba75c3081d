import { Type } from '@sinclair/typebox';
import { UnprocessableError } from '../errors.ts';
import { sameJson } from './common.ts';
import type { SecretBox } from './deps.ts';

// What may be said about a write-only secret without revealing it, and the rule that keeps a
// write key from redirecting one.
//
// Fingerprints: each secret shows `{ fingerprint, updatedAt }`. The fingerprint is an HMAC of the
// stored value under a key derived from the instance's encryption key, scoped to the resource and
// the secret's name, so it changes exactly when the value does, cannot be brute-forced offline
// from a leaked response, and does not reveal that two resources share a value. An `{ env }`
// reference is fingerprinted as the reference (the variable's value is not Backhaul's to track).
// Writing the same values again changes nothing (no version bump, no audit event).
//
// Re-pointing: a secret is sent somewhere (a host and port, a base URL, a token URL, an events
// URL). A request that changes where must carry the secrets again, so a key that can write but
// never saw the secrets cannot redirect them to a server of its choosing.

export interface SecretMetaEntry {
  fingerprint: string;
  updatedAt: string;
}
export type SecretMeta = Record<string, SecretMetaEntry>;

export const SecretsView = Type.Record(
  Type.String(),
  Type.Object({
    fingerprint: Type.String({ description: 'Keyed HMAC of the value (never the value or its plain hash); changes exactly when the value changes' }),
    updatedAt: Type.String({ format: 'date-time', description: 'When this secret\'s value last changed' }),
  }),
  { description: 'Per secret name: a fingerprint to detect changes without revealing the value, and when it changed' },
);

/** The `secretFingerprints` member of a view: entries for the names that have metadata, sorted by name. */
export function secretsView(names: string[], meta: SecretMeta | null | undefined): Record<string, SecretMetaEntry> {
  const out: Record<string, SecretMetaEntry> = {};
  for (const n of [...names].sort()) {
    const m = meta?.[n];
    if (m) out[n] = { fingerprint: m.fingerprint, updatedAt: m.updatedAt };
  }
  return out;
}

/**
 * The metadata of a new secret set: names whose stored value is unchanged keep their entry
 * (fingerprint and updatedAt); changed and new names get a new fingerprint and `now`.
 * @param scope the resource id (fingerprints are scoped by resource and name)
 * @param before the values stored so far (opened), with their metadata
 */
export function nextSecretMeta(
  box: SecretBox,
  scope: string,
  before: { values: Record<string, unknown>; meta: SecretMeta | null | undefined; since: Date },
  after: Record<string, unknown>,
  now: Date,
): SecretMeta {
  const out: SecretMeta = {};
  for (const [name, value] of Object.entries(after)) {
    const fingerprint = box.fingerprint(`${scope}/${name}`, value);
    const kept = name in before.values && sameJson(before.values[name], value);
    out[name] = kept ? { fingerprint, updatedAt: before.meta?.[name]?.updatedAt ?? before.since.toISOString() } : { fingerprint, updatedAt: now.toISOString() };
  }
  return out;
}

/** Whether two secret sets hold the same names and values. */
export function sameSecrets(a: Record<string, unknown>, b: Record<string, unknown>): boolean {
  return sameJson(a, b);
}

/**
 * Refuses a write that changes where secrets are sent without sending them again.
 * @param changedTargets the paths (e.g. `/config/baseUrl`) whose value changes in this write
 * @param kept the names of stored secrets that the write keeps without re-sending their values
 * @throws UnprocessableError 422 `secrets_required`, naming the secrets and the fields
 */
export function requireResentSecrets(resource: string, slug: string, changedTargets: string[], kept: string[]): void {
  if (!changedTargets.length || !kept.length) return;
  const names = [...kept].sort();
  throw new UnprocessableError(
    'secrets_required',
    `Changing ${changedTargets.join(', ')} of ${resource} "${slug}" changes where its secrets are sent: send ${names.map((n) => `secrets.${n}`).join(', ')} again in the same request.`,
    {
      errors: names.map((n) => ({ path: `/secrets/${n}`, message: `is required when ${changedTargets.join(', ')} changes` })),
      hint: 'Secrets are write-only, so a change of destination must come from someone who holds them. Send the current values (or `{ "env": … }` references) with the change, or remove a secret with null.',
      extra: { secretNames: names, changedFields: changedTargets },
    },
  );
}
