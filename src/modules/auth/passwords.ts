import { createHash, randomBytes } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { hash as argon2Hash, verify as argon2Verify } from '@node-rs/argon2';
import { hash as bcryptHash, verify as bcryptVerify } from '@node-rs/bcrypt';
import type { Config } from '../../config.js';
import { createSemaphore } from '../../lib/semaphore.js';

/**
 * Password hashing. Both libraries run on libuv's thread pool, so hashing never blocks the event
 * loop. Stored formats:
 *
 * - `$argon2id$v=19$m=…,t=…,p=…$…` — the default (OWASP parameters).
 * - `$bcrypt-sha256$$2b$12$…` — bcrypt of base64(SHA-256(password)). bcrypt reads only 72 bytes, so
 *   plain bcrypt lets two long passwords with a common prefix verify as each other; the pre-hash
 *   gives every password a fixed 44-byte input.
 * - `$2a$`, `$2b$`, `$2y$` — plain bcrypt from an imported user base: verified as is, then always
 *   replaced at the next successful login.
 *
 * Passwords are NFC-normalised so the same password typed on different keyboards matches.
 */

export interface PasswordHasher {
  hash(password: string): Promise<string>;
  verify(storedHash: string, password: string): Promise<boolean>;
  /** Whether a hash that just verified should be replaced by one with today's algorithm and cost. */
  needsRehash(storedHash: string): boolean;
  /** The work of one verification against a hash of nobody, so unknown accounts take as long. */
  verifyNobody(password: string): Promise<false>;
}

const bcryptSha256Prefix = '$bcrypt-sha256$';
const plainBcrypt = /^\$2[aby]\$(\d\d)\$/;
const argon2Params = /^\$argon2id\$v=\d+\$m=(\d+),t=(\d+),p=(\d+)\$/;

function preHash(password: string): string {
  return createHash('sha256').update(password, 'utf8').digest('base64');
}

export function createPasswordHasher(config: Config['auth']): PasswordHasher {
  const argon2Options = {
    // Algorithm.Argon2id: the package exports a const enum, which isolated modules cannot read.
    algorithm: 2,
    memoryCost: config.argon2.memoryKib,
    timeCost: config.argon2.iterations,
    parallelism: config.argon2.parallelism,
  };

  // No more hashes at once than cores the process may use: more only time-slice one another (and
  // thrash the CPU caches with 19 MiB each), and would hold every thread-pool thread that file and
  // DNS work needs too. Under a login flood, the rest queue here.
  const slot = createSemaphore(Math.max(1, availableParallelism()));

  const hash = async (password: string): Promise<string> => {
    const normalized = password.normalize('NFC');
    if (config.passwordAlgorithm === 'bcrypt') {
      return `${bcryptSha256Prefix}${await slot(() => bcryptHash(preHash(normalized), config.bcryptCost))}`;
    }
    return slot(() => argon2Hash(normalized, argon2Options));
  };

  const verify = async (storedHash: string, password: string): Promise<boolean> => {
    const normalized = password.normalize('NFC');
    try {
      if (storedHash.startsWith('$argon2')) return await slot(() => argon2Verify(storedHash, normalized));
      if (storedHash.startsWith(bcryptSha256Prefix)) {
        return await slot(() =>
          bcryptVerify(preHash(normalized), storedHash.slice(bcryptSha256Prefix.length)),
        );
      }
      if (plainBcrypt.test(storedHash)) return await slot(() => bcryptVerify(password, storedHash));
    } catch {
      // A corrupt stored hash verifies nothing.
      return false;
    }
    return false;
  };

  // Made once, up front, so that not even the first unknown login takes longer than a known one.
  const nobody = hash(randomBytes(16).toString('hex'));
  nobody.catch(() => {});

  return {
    hash,
    verify,
    needsRehash(storedHash) {
      const argon2 = argon2Params.exec(storedHash);
      if (argon2 !== null) {
        if (config.passwordAlgorithm !== 'argon2id') return true;
        const [, m, t, p] = argon2.map(Number);
        return (
          (m ?? 0) < config.argon2.memoryKib ||
          (t ?? 0) < config.argon2.iterations ||
          p !== config.argon2.parallelism
        );
      }
      if (storedHash.startsWith(bcryptSha256Prefix)) {
        if (config.passwordAlgorithm !== 'bcrypt') return true;
        const cost = plainBcrypt.exec(storedHash.slice(bcryptSha256Prefix.length))?.[1];
        return Number(cost) < config.bcryptCost;
      }
      // Plain bcrypt (imported) or anything unknown.
      return true;
    },
    async verifyNobody(password) {
      await verify(await nobody, password);
      return false;
    },
  };
}
