import { createHash, randomBytes } from 'node:crypto';
import { errors as joseErrors, jwtVerify, SignJWT } from 'jose';
import type { Config } from '../../config.js';
import { UnauthenticatedError } from '../../lib/errors.js';
import type { UserRole } from '../users/users.table.js';

/**
 * Access tokens: short-lived JWTs, HS256, with iss, aud, sub (user id), sid (session id), role, iat
 * and exp. Verification pins the algorithm and the token type and checks every claim, so `alg: none`,
 * another key, another audience or issuer, an expired token or a refresh token are all refused.
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

/** RFC 9068's media type for JWT access tokens: nothing else we might sign can pass as one. */
const accessTokenType = 'at+jwt';
const clockToleranceSeconds = 5;

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

export function createTokenService(config: Config['auth'], now: () => number = Date.now): TokenService {
  const key = new TextEncoder().encode(config.jwtSecret);
  return {
    async issueAccessToken({ userId, sessionId, role, sessionExpiresAt }) {
      const issuedAt = Math.floor(now() / 1000);
      const expiresAt = Math.min(
        issuedAt + config.accessTokenTtlSeconds,
        Math.floor(Date.parse(sessionExpiresAt) / 1000),
      );
      const accessToken = await new SignJWT({ sid: sessionId, role })
        .setProtectedHeader({ alg: 'HS256', typ: accessTokenType })
        .setIssuer(config.issuer)
        .setAudience(config.audience)
        .setSubject(userId)
        .setIssuedAt(issuedAt)
        .setExpirationTime(expiresAt)
        .sign(key);
      return { accessToken, expiresIn: expiresAt - issuedAt };
    },

    async verifyAccessToken(token) {
      try {
        const { payload } = await jwtVerify(token, key, {
          algorithms: ['HS256'],
          typ: accessTokenType,
          issuer: config.issuer,
          audience: config.audience,
          requiredClaims: ['sub', 'sid', 'iat', 'exp'],
          clockTolerance: clockToleranceSeconds,
          currentDate: new Date(now()),
        });
        const { sub, sid, role, exp } = payload;
        if (
          typeof sub !== 'string' ||
          typeof sid !== 'string' ||
          (role !== 'customer' && role !== 'admin') ||
          typeof exp !== 'number'
        ) {
          throw new UnauthenticatedError('The access token is not valid.');
        }
        return { userId: sub, sessionId: sid, role, expiresAt: exp };
      } catch (err) {
        if (err instanceof UnauthenticatedError) throw err;
        if (err instanceof joseErrors.JWTExpired)
          throw new UnauthenticatedError('The access token has expired.');
        throw new UnauthenticatedError('The access token is not valid.');
      }
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
