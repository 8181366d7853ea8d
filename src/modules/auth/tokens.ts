import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Config } from '../../config.js';
import { UnauthenticatedError } from '../../lib/errors.js';
import type { UserRole } from '../users/users.table.js';
import { createKeyRing } from './signing-keys.js';

/**
 * Access tokens: short-lived JWTs (RFC 7519), HS256, header `{"alg":"HS256","typ":"at+jwt","kid":…}`
 * (RFC 9068), claims iss, aud, sub (user id), sid (session id), role, iat and exp. The `kid` names
 * the key of the ring (signing-keys.ts, decision 0055) that signed it: the current key signs, the
 * current, previous and next keys verify, and a token whose kid is not in the ring is refused
 * before any MAC is computed.
 *
 * Signed and verified with node:crypto's synchronous HMAC: about 4 µs a verification, where a
 * WebCrypto-based library took about 100 µs (its operations hop through the thread pool) on every
 * authenticated request (docs/decisions/0009-jwt-with-node-crypto.md). Verification accepts exactly
 * the headers we issue (one per key of the ring), so `alg: none`, another algorithm or another token type never reaches the signature
 * check; the signature is compared in constant time; every claim is checked. The tests verify our
 * tokens with an independent JWT library, and attack ours with tokens minted by it.
 *
 * Refresh tokens: 256 random bits, opaque to the client, stored only as their SHA-256.
 */

export interface AccessClaims {
  readonly userId: string;
  readonly sessionId: string;
  readonly role: UserRole;
  /** Seconds since the epoch. */
  readonly expiresAt: number;
}

export interface IssuedAccessToken {
  readonly accessToken: string;
  /** Seconds until it expires. */
  readonly expiresIn: number;
}

export interface TokenService {
  issueAccessToken(input: {
    userId: string;
    sessionId: string;
    role: UserRole;
    /** The session's absolute end; the token never outlives it. */
    sessionExpiresAt: string;
  }): Promise<IssuedAccessToken>;
  verifyAccessToken(token: string): Promise<AccessClaims>;
}

const encodeHeader = (fields: Record<string, string>) =>
  Buffer.from(JSON.stringify({ alg: 'HS256', typ: 'at+jwt', ...fields })).toString('base64url');
/**
 * Tokens issued before key ids (decision 0055): accepted only when the current key signed them, so
 * tokens in flight during the upgrade keep working and a rotation retires them like any other.
 */
const headerWithoutKid = encodeHeader({});
/** Tolerated clock difference between the servers that issue and verify a token. */
const clockToleranceSeconds = 5;
const base64url = /^[A-Za-z0-9_-]+$/;

function invalid(): UnauthenticatedError {
  return new UnauthenticatedError('The access token is not valid.');
}

export function createTokenService(config: Config['auth'], now: () => number = Date.now): TokenService {
  const ring = createKeyRing({
    current: config.jwtSecret,
    previous: config.jwtPreviousSecrets,
    next: config.jwtNextSecrets,
  });
  const sign = (key: Buffer, signingInput: string) => createHmac('sha256', key).update(signingInput).digest();
  const header = encodeHeader({ kid: ring.current.kid });
  // The exact headers we accept, each with its one key: no header is parsed, no kid is looked up
  // by anything but string equality.
  const verifiers = new Map<string, Buffer>(ring.verifying.map((k) => [encodeHeader({ kid: k.kid }), k.key]));
  verifiers.set(headerWithoutKid, ring.current.key);

  return {
    async issueAccessToken({ userId, sessionId, role, sessionExpiresAt }) {
      const issuedAt = Math.floor(now() / 1000);
      const expiresAt = Math.min(
        issuedAt + config.accessTokenTtlSeconds,
        Math.floor(Date.parse(sessionExpiresAt) / 1000),
      );
      const payload = Buffer.from(
        JSON.stringify({
          iss: config.issuer,
          aud: config.audience,
          sub: userId,
          sid: sessionId,
          role,
          iat: issuedAt,
          exp: expiresAt,
        }),
      ).toString('base64url');
      const signingInput = `${header}.${payload}`;
      return {
        accessToken: `${signingInput}.${sign(ring.current.key, signingInput).toString('base64url')}`,
        expiresIn: expiresAt - issuedAt,
      };
    },

    async verifyAccessToken(token) {
      const parts = token.split('.');
      if (parts.length !== 3) throw invalid();
      const [givenHeader, payload = '', signature = ''] = parts;
      // A header we issue, byte for byte: no algorithm or type negotiation at all, and a kid of
      // a key in the ring (an unknown or retired kid is simply not there).
      const key = verifiers.get(givenHeader ?? '');
      if (key === undefined || !base64url.test(payload) || !base64url.test(signature)) throw invalid();
      const expected = sign(key, `${givenHeader}.${payload}`);
      const given = Buffer.from(signature, 'base64url');
      if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw invalid();
      // One string per token: the last character has spare bits that decode to the same bytes
      // (security probe 2026-12-02, finding 14). Only the canonical encoding is ours.
      if (given.toString('base64url') !== signature) throw invalid();

      let claims: Record<string, unknown>;
      try {
        claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
      } catch {
        throw invalid();
      }
      if (typeof claims !== 'object' || claims === null) throw invalid();
      const { iss, aud, sub, sid, role, iat, exp, nbf } = claims;
      const audiences = Array.isArray(aud) ? aud : [aud];
      if (
        iss !== config.issuer ||
        !audiences.includes(config.audience) ||
        typeof sub !== 'string' ||
        typeof sid !== 'string' ||
        (role !== 'customer' && role !== 'admin') ||
        typeof iat !== 'number' ||
        typeof exp !== 'number' ||
        (nbf !== undefined && typeof nbf !== 'number')
      ) {
        throw invalid();
      }
      const nowSeconds = now() / 1000;
      if (iat > nowSeconds + clockToleranceSeconds) throw invalid();
      // We never issue nbf, but a token that carries one is not valid before it (RFC 7519 §4.1.5).
      if (typeof nbf === 'number' && nbf > nowSeconds + clockToleranceSeconds) throw invalid();
      if (exp <= nowSeconds - clockToleranceSeconds)
        throw new UnauthenticatedError('The access token has expired.');
      return { userId: sub, sessionId: sid, role, expiresAt: exp };
    },
  };
}

export interface RefreshToken {
  readonly token: string;
  readonly hash: string;
}

export function hashRefreshToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

export function newRefreshToken(): RefreshToken {
  const token = randomBytes(32).toString('base64url');
  return { token, hash: hashRefreshToken(token) };
}
