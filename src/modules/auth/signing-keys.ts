import { createHash, randomBytes } from 'node:crypto';

/**
 * The access-token key ring (decision 0055). One key signs (the current one); the current, the
 * previous and the next keys verify. Every key is named by a key id (`kid`) derived from the key
 * itself, so every server that holds a key gives it the same id without anyone writing ids down,
 * and the id reveals nothing usable about the key (a truncated SHA-256 of 256 random bits).
 *
 * Rotation is three configuration changes, each safe to roll out one server at a time:
 *   1. add the new key as `JWT_SECRET_NEXT` (verifies, never signs);
 *   2. promote it: `JWT_SECRET` = new, `JWT_SECRET_PREVIOUS` = old (new tokens carry the new kid);
 *   3. after the access-token lifetime, drop `JWT_SECRET_PREVIOUS` (its tokens are refused).
 * Refresh tokens are opaque and stored hashed, so no step ends a session: a client whose access
 * token was refused refreshes and gets one signed with the current key.
 */

export interface SigningKey {
  readonly kid: string;
  readonly key: Buffer;
}

export interface KeyRing {
  /** Signs every new token. */
  readonly current: SigningKey;
  /** Current, previous and next keys, without duplicates: each verifies. */
  readonly verifying: readonly SigningKey[];
}

export interface KeyRingSecrets {
  readonly current: string;
  readonly previous?: readonly string[];
  readonly next?: readonly string[];
}

/** The key id of a secret: 16 base64url characters (96 bits) of a SHA-256 over a fixed label. */
export function keyId(secret: string): string {
  return createHash('sha256')
    .update('shipshape signing key id\0')
    .update(secret, 'utf8')
    .digest('base64url')
    .slice(0, 16);
}

export function createKeyRing(secrets: KeyRingSecrets): KeyRing {
  const toKey = (secret: string): SigningKey => ({ kid: keyId(secret), key: Buffer.from(secret, 'utf8') });
  const current = toKey(secrets.current);
  const verifying = new Map<string, SigningKey>([[current.kid, current]]);
  for (const secret of [...(secrets.next ?? []), ...(secrets.previous ?? [])]) {
    const key = toKey(secret);
    if (!verifying.has(key.kid)) verifying.set(key.kid, key);
  }
  return { current, verifying: [...verifying.values()] };
}

/** A new random secret for a key ring or a bearer token: 48 random bytes, base64 (64 characters). */
export function newSecret(): string {
  return randomBytes(48).toString('base64');
}
