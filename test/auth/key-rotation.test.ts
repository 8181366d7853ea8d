import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { jwtVerify, SignJWT } from 'jose';
import { buildApp } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { acceptedMetricsTokens, metricsAuthorized } from '../../src/infra/metrics.js';
import { readAfterTokens } from '../../src/infra/read-your-writes.js';
import { keyId, newSecret } from '../../src/modules/auth/signing-keys.js';
import { createTokenService } from '../../src/modules/auth/tokens.js';
import { waitUntil } from '../harness/wait.js';
import { skipEngine, testConfig, testDatabaseEnv } from '../helper.js';
import { cli } from '../support/cli.js';

const farFuture = new Date(Date.now() + 86_400_000).toISOString();
const k1 = newSecret();
const k2 = newSecret();

function ring(env: Record<string, string>) {
  return createTokenService(testConfig(env).auth);
}

const subject = { userId: 'u-1', sessionId: 's-1', role: 'customer', sessionExpiresAt: farFuture } as const;

async function issue(tokens: ReturnType<typeof createTokenService>): Promise<string> {
  return (await tokens.issueAccessToken(subject)).accessToken;
}

function kidOf(token: string): unknown {
  return JSON.parse(Buffer.from(token.split('.')[0] ?? '', 'base64url').toString()).kid;
}

async function refused(tokens: ReturnType<typeof createTokenService>, token: string): Promise<void> {
  await assert.rejects(
    tokens.verifyAccessToken(token),
    (err: Error & { code?: string }) => err.code === 'UNAUTHENTICATED',
  );
}

/** A token with our claims and the given header, HMAC-signed with `secret`. */
function forged(header: Record<string, string>, secret: string): string {
  const now = Math.floor(Date.now() / 1000);
  const config = testConfig().auth;
  const encode = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const input = `${encode(header)}.${encode({ iss: config.issuer, aud: config.audience, sub: 'u-1', sid: 's-1', role: 'customer', iat: now, exp: now + 600 })}`;
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
}

describe('signing-key ring', () => {
  test('the current key signs with its kid; current, previous and next keys verify; nothing else does', async () => {
    const before = ring({ JWT_SECRET: k1 });
    const withNext = ring({ JWT_SECRET: k1, JWT_SECRET_NEXT: k2 });
    const promoted = ring({ JWT_SECRET: k2, JWT_SECRET_PREVIOUS: k1 });
    const retired = ring({ JWT_SECRET: k2 });

    const old = await issue(before);
    assert.equal(kidOf(old), keyId(k1));
    assert.equal(kidOf(await issue(withNext)), keyId(k1), 'a next key never signs');
    const fresh = await issue(promoted);
    assert.equal(kidOf(fresh), keyId(k2));
    assert.notEqual(keyId(k1), keyId(k2));

    // Mixed fleet during step 2: the unpromoted server accepts the promoted one's tokens.
    assert.equal((await withNext.verifyAccessToken(fresh)).sessionId, 's-1');
    assert.equal((await promoted.verifyAccessToken(old)).sessionId, 's-1');
    await refused(before, fresh);
    // Retired: the old key's tokens end, the new key's live on.
    await refused(retired, old);
    assert.equal((await retired.verifyAccessToken(fresh)).sessionId, 's-1');

    // An unknown kid, a retired kid with its real signature, a kid that names another key.
    await refused(promoted, forged({ alg: 'HS256', typ: 'at+jwt', kid: 'not-a-key-of-ours' }, k2));
    await refused(retired, forged({ alg: 'HS256', typ: 'at+jwt', kid: keyId(k1) }, k1));
    await refused(promoted, forged({ alg: 'HS256', typ: 'at+jwt', kid: keyId(k2) }, k1));
    await refused(promoted, forged({ alg: 'HS256', typ: 'at+jwt', kid: keyId(k1), extra: 'x' }, k1));
    // A token from before key ids: only the current key may have signed it.
    const legacy = forged({ alg: 'HS256', typ: 'at+jwt' }, k2);
    assert.equal((await promoted.verifyAccessToken(legacy)).sessionId, 's-1');
    await refused(promoted, forged({ alg: 'HS256', typ: 'at+jwt' }, k1));
  });

  test('an independent JWT library finds the key by kid, and its kid-bearing tokens verify', async () => {
    const promoted = ring({ JWT_SECRET: k2, JWT_SECRET_PREVIOUS: k1 });
    const keys = new Map([
      [keyId(k1), new TextEncoder().encode(k1)],
      [keyId(k2), new TextEncoder().encode(k2)],
    ]);
    const config = testConfig().auth;
    const { payload } = await jwtVerify(
      await issue(promoted),
      (header) => keys.get(header.kid ?? '') ?? new Uint8Array(),
      {
        algorithms: ['HS256'],
        typ: 'at+jwt',
        issuer: config.issuer,
        audience: config.audience,
      },
    );
    assert.equal(payload.sid, 's-1');
    const theirs = await new SignJWT({ sub: 'u-2', sid: 's-2', role: 'admin' })
      .setProtectedHeader({ alg: 'HS256', typ: 'at+jwt', kid: keyId(k1) })
      .setIssuer(config.issuer)
      .setAudience(config.audience)
      .setIssuedAt()
      .setExpirationTime('5m')
      .sign(new TextEncoder().encode(k1));
    assert.equal((await promoted.verifyAccessToken(theirs)).sessionId, 's-2');
  });

  test('configuration: lists, _FILE variants, production lengths, a ring needs its signing key', () => {
    const dir = mkdtempSync(join(tmpdir(), 'shipshape-keys-'));
    try {
      writeFileSync(join(dir, 'previous'), `${k1}\n`);
      writeFileSync(join(dir, 'next'), `${k2},${k1}\n`);
      const auth = loadConfig({
        JWT_SECRET: newSecret(),
        JWT_SECRET_PREVIOUS_FILE: join(dir, 'previous'),
        JWT_SECRET_NEXT_FILE: join(dir, 'next'),
      }).auth;
      assert.deepEqual(auth.jwtPreviousSecrets, [k1]);
      assert.deepEqual(auth.jwtNextSecrets, [k2, k1]);
      writeFileSync(join(dir, 'metrics-old'), 'old-metrics-token\n');
      const metrics = loadConfig({
        METRICS_TOKEN: 'new-metrics-token',
        METRICS_TOKEN_PREVIOUS_FILE: join(dir, 'metrics-old'),
      }).metrics;
      assert.deepEqual(acceptedMetricsTokens(metrics), ['new-metrics-token', 'old-metrics-token']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    assert.throws(
      () => loadConfig({ JWT_SECRET_PREVIOUS: k1 }),
      /JWT_SECRET_PREVIOUS and JWT_SECRET_NEXT need JWT_SECRET/,
    );
    assert.throws(
      () => loadConfig({ NODE_ENV: 'production', JWT_SECRET: k2, JWT_SECRET_PREVIOUS: 'short' }),
      /every key in JWT_SECRET_PREVIOUS must be at least 32 bytes/,
    );
    assert.throws(
      () => loadConfig({ JWT_SECRET: k1, JWT_SECRET_NEXT: k2, JWT_SECRET_NEXT_FILE: '/x' }),
      /JWT_SECRET_NEXT and JWT_SECRET_NEXT_FILE are both set/,
    );
    assert.throws(
      () => loadConfig({ METRICS_TOKEN_PREVIOUS: 'x' }),
      /METRICS_TOKEN_PREVIOUS needs METRICS_TOKEN/,
    );
  });

  test('metrics token and read-your-writes tokens rotate the same way', () => {
    const during = ['new-token', 'old-token'];
    assert.ok(metricsAuthorized('Bearer new-token', during));
    assert.ok(metricsAuthorized('Bearer old-token', during));
    assert.ok(!metricsAuthorized('Bearer other', during));
    assert.ok(!metricsAuthorized(undefined, during));
    assert.ok(!metricsAuthorized('Bearer old-token', ['new-token']), 'retired');
    assert.ok(metricsAuthorized(undefined, []), 'no token configured: open, as before');

    const lsn = '0000000100000abc';
    const old = readAfterTokens([k1]).sign(lsn);
    assert.equal(readAfterTokens([k2, k1]).verify(old), lsn, 'previous key still verifies');
    assert.equal(readAfterTokens([k1, k2]).verify(readAfterTokens([k2]).sign(lsn)), lsn, 'next key verifies');
    assert.equal(readAfterTokens([k2]).verify(old), undefined, 'retired');
  });

  test('npm run secrets:rotate prints a new key, its kid and the steps naming this host’s ring', async () => {
    const printed = await cli('secrets-rotate', {
      NODE_ENV: 'test',
      JWT_SECRET: k1,
      JWT_SECRET_PREVIOUS: k2,
    });
    assert.equal(printed.status, 0, printed.stderr);
    const secret = /^\s{2}(\S{64})$/m.exec(printed.stdout)?.[1] ?? '';
    assert.equal(Buffer.from(secret, 'base64').length, 48);
    assert.match(printed.stdout, new RegExp(`kid ${keyId(secret)}`));
    assert.match(printed.stdout, new RegExp(`current ${keyId(k1)}, previous ${keyId(k2)}`));
    for (const step of [
      'JWT_SECRET_NEXT_FILE',
      'JWT_SECRET_PREVIOUS_FILE',
      'unset JWT_SECRET_PREVIOUS',
      '960 s',
    ])
      assert.ok(printed.stdout.includes(step), step);
    assert.ok(!printed.stdout.includes(k1), 'the current key is never printed');

    const dir = mkdtempSync(join(tmpdir(), 'shipshape-rotate-'));
    try {
      const out = join(dir, 'metrics-token');
      const written = await cli('secrets-rotate', { NODE_ENV: 'test' }, '--secret', 'metrics', '--out', out);
      assert.equal(written.status, 0, written.stderr);
      assert.match(written.stdout, /METRICS_TOKEN_PREVIOUS_FILE/);
      assert.equal(statSync(out).mode & 0o777, 0o600);
      const again = await cli('secrets-rotate', { NODE_ENV: 'test' }, '--out', out);
      assert.equal(again.status, 1);
      assert.match(again.stderr, /cannot create .*EEXIST/);
      const wrong = await cli('secrets-rotate', {}, '--secret', 'database');
      assert.equal(wrong.status, 1);
      assert.match(wrong.stderr, /--secret must be jwt or metrics/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

interface Holder {
  access: string;
  refresh: string;
  /** Refreshes every few requests, as a client does before expiry; the others keep their first token. */
  readonly refreshesOften: boolean;
}

interface Tally {
  requests: number;
  /** 401 for a token of a key still in every server's ring, or anything but 200/401: must stay 0. */
  failures: number;
  /** 401s answered for tokens of the retired key (then refreshed). */
  retiredRefusals: number;
  refreshes: number;
  /** A refresh that did not work: the user would have been logged out. Must stay 0. */
  loggedOut: number;
  byKid: Map<string, number>;
  problems: string[];
}

// On PostgreSQL, the engine of every multi-server layout; the ring itself touches no database, and
// the refresh path it relies on runs on both engines in test/auth/auth.test.ts.
for (const engine of ['postgres'] as const) {
  describe(`rotation under load across two instances on ${engine}`, {
    skip: await skipEngine(engine),
  }, () => {
    test('add next, promote, retire, one server at a time: nobody is logged out; the retired key’s tokens end', async () => {
      const database = await testDatabaseEnv(engine);
      const servers: Array<{ app: FastifyInstance; url: string } | undefined> = [undefined, undefined];
      // The load balancer: only servers in service get requests; one leaves service, its requests
      // already sent finish (the drain), and only then does it restart.
      const live: string[] = [];
      const inFlight = new Map<string, number>();
      let next = 0;
      const send = async (
        path: string,
        init: RequestInit = {},
      ): Promise<{ status: number; body: string }> => {
        next = (next + 1) % Math.max(1, live.length);
        const url = live[next] ?? live[0];
        if (url === undefined) throw new Error('no server in service');
        inFlight.set(url, (inFlight.get(url) ?? 0) + 1);
        try {
          const res = await fetch(`${url}${path}`, { ...init, signal: AbortSignal.timeout(30_000) });
          return { status: res.status, body: await res.text() };
        } finally {
          inFlight.set(url, (inFlight.get(url) ?? 1) - 1);
        }
      };
      const start = async (index: number, env: Record<string, string>) => {
        const app = await buildApp(testConfig({ ...database.env, ...env }));
        await app.listen({ host: '127.0.0.1', port: 0 });
        const address = app.server.address();
        const url = `http://127.0.0.1:${typeof address === 'object' && address !== null ? address.port : 0}`;
        servers[index] = { app, url };
        live.push(url);
      };
      const restart = async (index: number, env: Record<string, string>) => {
        const server = servers[index];
        if (server !== undefined) {
          live.splice(live.indexOf(server.url), 1);
          await waitUntil(() => (inFlight.get(server.url) ?? 0) === 0, { what: 'drain', intervalMs: 5 });
          await server.app.close();
        }
        await start(index, env);
      };
      const tally: Tally = {
        requests: 0,
        failures: 0,
        retiredRefusals: 0,
        refreshes: 0,
        loggedOut: 0,
        byKid: new Map(),
        problems: [],
      };
      let retiredKid: string | undefined;
      let stop = false;
      const post = (path: string, body: unknown) =>
        send(path, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(body),
        });
      const me = (access: string) =>
        send('/api/users/me', { headers: { authorization: `Bearer ${access}` } });

      const refresh = async (holder: Holder) => {
        const res = await post('/api/auth/refresh', { refreshToken: holder.refresh });
        if (res.status !== 200) {
          tally.loggedOut += 1;
          tally.problems.push(`refresh → ${res.status}`);
          return false;
        }
        const body = JSON.parse(res.body) as { accessToken: string; refreshToken: string };
        holder.access = body.accessToken;
        holder.refresh = body.refreshToken;
        tally.refreshes += 1;
        return true;
      };

      const client = async (holder: Holder) => {
        let count = 0;
        while (!stop) {
          count += 1;
          try {
            if (holder.refreshesOften && count % 8 === 0) await refresh(holder);
            const kid = String(kidOf(holder.access));
            const res = await me(holder.access);
            tally.requests += 1;
            if (res.status === 200) {
              tally.byKid.set(kid, (tally.byKid.get(kid) ?? 0) + 1);
            } else if (res.status === 401 && kid === retiredKid) {
              tally.retiredRefusals += 1;
              if (await refresh(holder)) {
                const again = await me(holder.access);
                tally.requests += 1;
                if (again.status !== 200) {
                  tally.failures += 1;
                  tally.problems.push(`after refresh → ${again.status}`);
                }
              }
            } else {
              tally.failures += 1;
              tally.problems.push(`${res.status} for kid ${kid}`);
            }
          } catch (err) {
            tally.failures += 1;
            tally.problems.push(String(err));
          }
        }
      };

      const started = Date.now();
      try {
        await start(0, { JWT_SECRET: k1 });
        await start(1, { JWT_SECRET: k1 });
        const holders: Holder[] = [];
        const firstLogin = { username: '', password: '' };
        for (let i = 0; i < 12; i += 1) {
          const suffix = `${process.pid}-${i}-${Math.random().toString(36).slice(2, 8)}`;
          const account = { username: `rotation-${suffix}`, password: `rotation passphrase ${suffix}` };
          if (i === 0) Object.assign(firstLogin, account);
          const res = await post('/api/auth/register', {
            email: `rotation-${suffix}@example.com`,
            ...account,
          });
          assert.equal(res.status, 201, res.body);
          const body = JSON.parse(res.body) as { accessToken: string; refreshToken: string };
          holders.push({ access: body.accessToken, refresh: body.refreshToken, refreshesOften: i % 3 !== 0 });
        }
        const clients = holders.map((holder) => client(holder));
        const settle = async (what: string) => {
          const from = tally.requests;
          await waitUntil(() => tally.requests >= from + 150 || tally.failures > 0, {
            timeoutMs: 60_000,
            what,
          });
        };
        await settle('load on the old ring');

        // Step 1: the new key as next, server by server.
        for (const index of [0, 1]) {
          await restart(index, { JWT_SECRET: k1, JWT_SECRET_NEXT: k2 });
          await settle(`step 1 on server ${index}`);
        }
        // Step 2: promote, server by server (in between, each accepts the other's tokens).
        for (const index of [0, 1]) {
          await restart(index, { JWT_SECRET: k2, JWT_SECRET_PREVIOUS: k1 });
          await settle(`step 2 on server ${index}`);
        }
        await waitUntil(() => (tally.byKid.get(keyId(k2)) ?? 0) > 200, {
          timeoutMs: 60_000,
          what: 'new-kid traffic',
        });
        const beforeRetirement = { ...tally, byKid: new Map(tally.byKid) };
        assert.equal(beforeRetirement.failures, 0, tally.problems.slice(0, 5).join('; '));
        assert.equal(beforeRetirement.retiredRefusals, 0);
        assert.ok(
          (beforeRetirement.byKid.get(keyId(k1)) ?? 0) > 0,
          'old tokens worked while both keys were in the ring',
        );
        // New tokens carry the new kid, whichever server issued them.
        for (const server of servers) {
          const res = await fetch(`${server?.url}/api/auth/login`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ login: firstLogin.username, password: firstLogin.password }),
          });
          assert.equal(res.status, 200);
          assert.equal(kidOf(((await res.json()) as { accessToken: string }).accessToken), keyId(k2));
        }

        // Step 3: retire the old key, server by server (early, as after a leak: tokens of it are still held).
        retiredKid = keyId(k1);
        for (const index of [0, 1]) {
          await restart(index, { JWT_SECRET: k2 });
          await settle(`step 3 on server ${index}`);
        }
        await waitUntil(() => holders.every((holder) => kidOf(holder.access) === keyId(k2)), {
          timeoutMs: 60_000,
          what: 'every holder on the new key',
        });
        await settle('load on the new ring');
        stop = true;
        await Promise.all(clients);

        const seconds = (Date.now() - started) / 1000;
        console.log(
          `rotation on ${engine}: ${tally.requests} requests in ${seconds.toFixed(1)} s across 2 instances, ${tally.failures} failures, ` +
            `${tally.retiredRefusals} retired-key refusals (each refreshed), ${tally.refreshes} refreshes, ${tally.loggedOut} logged out; ` +
            `ok by kid: ${[...tally.byKid].map(([kid, n]) => `${kid === keyId(k1) ? 'old' : 'new'} ${n}`).join(', ')}`,
        );
        assert.equal(tally.failures, 0, tally.problems.slice(0, 5).join('; '));
        assert.equal(tally.loggedOut, 0, tally.problems.slice(0, 5).join('; '));
        assert.ok(tally.retiredRefusals > 0, 'the retired key’s tokens were refused');
        // Each holder is refused once at most: its refresh brings a token of the current key.
        assert.ok(tally.retiredRefusals <= holders.length, `${tally.retiredRefusals} refusals`);

        // Unknown kid, retired kid, a kid naming the current key over another key's signature: 401 everywhere.
        for (const server of servers) {
          for (const token of [
            forged({ alg: 'HS256', typ: 'at+jwt', kid: 'unknown-kid-0000' }, k2),
            forged({ alg: 'HS256', typ: 'at+jwt', kid: keyId(k1) }, k1),
            forged({ alg: 'HS256', typ: 'at+jwt', kid: keyId(k2) }, k1),
          ]) {
            const res = await fetch(`${server?.url}/api/users/me`, {
              headers: { authorization: `Bearer ${token}` },
            });
            assert.equal(res.status, 401);
            assert.equal(((await res.json()) as { code: string }).code, 'UNAUTHENTICATED');
          }
        }
      } finally {
        stop = true;
        for (const server of servers) await server?.app.close();
        await database.cleanup();
      }
    });
  });
}
