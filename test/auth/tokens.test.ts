import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { describe, test } from 'node:test';
import { jwtVerify, SignJWT } from 'jose';
import { keyId } from '../../src/modules/auth/signing-keys.js';
import { createTokenService, newRefreshToken } from '../../src/modules/auth/tokens.js';
import { testConfig } from '../helper.js';

const config = testConfig().auth;
const key = new TextEncoder().encode(config.jwtSecret);
const tokens = createTokenService(config);
const farFuture = new Date(Date.now() + 86_400_000).toISOString();

function b64(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

async function valid(): Promise<string> {
  return (
    await tokens.issueAccessToken({
      userId: 'u-1',
      sessionId: 's-1',
      role: 'customer',
      sessionExpiresAt: farFuture,
    })
  ).accessToken;
}

function claims(overrides: Record<string, unknown> = {}) {
  const now = Math.floor(Date.now() / 1000);
  return {
    iss: config.issuer,
    aud: config.audience,
    sub: 'u-1',
    sid: 's-1',
    role: 'customer',
    iat: now,
    exp: now + 600,
    ...overrides,
  };
}

async function rejected(token: string): Promise<void> {
  await assert.rejects(
    tokens.verifyAccessToken(token),
    (err: Error & { code?: string }) => err.code === 'UNAUTHENTICATED',
  );
}

describe('access tokens', () => {
  test('a token we issued verifies, with every claim', async () => {
    const token = await valid();
    const verified = await tokens.verifyAccessToken(token);
    assert.deepEqual(
      { ...verified, expiresAt: 0 },
      { userId: 'u-1', sessionId: 's-1', role: 'customer', expiresAt: 0 },
    );
    const [header, payload] = token.split('.');
    assert.deepEqual(JSON.parse(Buffer.from(header ?? '', 'base64url').toString()), {
      alg: 'HS256',
      typ: 'at+jwt',
      kid: keyId(config.jwtSecret),
    });
    const body = JSON.parse(Buffer.from(payload ?? '', 'base64url').toString());
    assert.deepEqual(Object.keys(body).sort(), ['aud', 'exp', 'iat', 'iss', 'role', 'sid', 'sub']);
    assert.equal(body.exp - body.iat, 900);
  });

  test('standard JWTs: an independent library verifies ours, and we accept its correctly made ones', async () => {
    const { payload, protectedHeader } = await jwtVerify(await valid(), key, {
      algorithms: ['HS256'],
      typ: 'at+jwt',
      issuer: config.issuer,
      audience: config.audience,
    });
    assert.equal(protectedHeader.alg, 'HS256');
    assert.equal(payload.sid, 's-1');
    const theirs = await new SignJWT(claims()).setProtectedHeader({ alg: 'HS256', typ: 'at+jwt' }).sign(key);
    assert.equal((await tokens.verifyAccessToken(theirs)).sessionId, 's-1');
  });

  test('never outlives its session', async () => {
    const soon = new Date(Date.now() + 60_000).toISOString();
    const { expiresIn } = await tokens.issueAccessToken({
      userId: 'u',
      sessionId: 's',
      role: 'admin',
      sessionExpiresAt: soon,
    });
    assert.ok(expiresIn <= 60 && expiresIn >= 58, String(expiresIn));
  });

  test('alg: none is refused', async () => {
    await rejected(`${b64({ alg: 'none', typ: 'at+jwt' })}.${b64(claims())}.`);
    await rejected(`${b64({ alg: 'none', typ: 'at+jwt' })}.${b64(claims())}`);
  });

  test('another key, another algorithm, an altered payload are refused', async () => {
    const otherKey = new TextEncoder().encode('another-secret-another-secret-another-secret');
    await rejected(
      await new SignJWT(claims()).setProtectedHeader({ alg: 'HS256', typ: 'at+jwt' }).sign(otherKey),
    );
    await rejected(await new SignJWT(claims()).setProtectedHeader({ alg: 'HS512', typ: 'at+jwt' }).sign(key));
    const [header, , signature] = (await valid()).split('.');
    await rejected(`${header}.${b64(claims({ role: 'admin' }))}.${signature}`);
    await rejected(`${header}.${b64(claims({ sub: 'someone-else' }))}.${signature}`);
    // Re-signing by hand with the right key but a tampered header type is refused too.
    const forgedHeader = b64({ alg: 'HS256', typ: 'JWT' });
    const body = b64(claims());
    const sig = createHmac('sha256', config.jwtSecret).update(`${forgedHeader}.${body}`).digest('base64url');
    await rejected(`${forgedHeader}.${body}.${sig}`);
  });

  test('expired, wrong audience, wrong issuer, missing claims, wrong role are refused', async () => {
    const now = Math.floor(Date.now() / 1000);
    const sign = (c: Record<string, unknown>) =>
      new SignJWT(c).setProtectedHeader({ alg: 'HS256', typ: 'at+jwt' }).sign(key);
    await rejected(await sign(claims({ iat: now - 1000, exp: now - 60 })));
    await rejected(await sign(claims({ aud: 'someone-else' })));
    await rejected(await sign(claims({ iss: 'evil' })));
    const { sid: _sid, ...noSid } = claims();
    await rejected(await sign(noSid));
    const { exp: _exp, ...noExp } = claims();
    await rejected(await sign(noExp));
    await rejected(await sign(claims({ role: 'superuser' })));
    await rejected(await sign(claims({ iat: now + 3600, exp: now + 4000 })));
    await rejected(await sign(claims({ sub: 42 })));
  });

  test('garbage and refresh tokens are refused', async () => {
    for (const token of ['', 'abc', 'a.b.c', `${b64({})}.${b64({})}.xx`, newRefreshToken().token])
      await rejected(token);
  });

  test('refresh tokens: 256 random bits, stored as SHA-256', () => {
    const { token, hash } = newRefreshToken();
    assert.equal(Buffer.from(token, 'base64url').length, 32);
    assert.match(hash, /^[0-9a-f]{64}$/);
    assert.notEqual(newRefreshToken().token, token);
  });
});
