import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { type ServerProcess, startServerProcess } from '../harness/process.js';
import { skipEngine, type TestDatabaseEnv, testDatabaseEnv } from '../helper.js';
import { uniqueName } from '../support/accounts.js';

/**
 * Security probe 2026-12-02, finding 1: revocations were ordered by each app server's clock, so one
 * server 10 minutes fast hid every other server's revocations from the pollers, and one 30 s slow
 * had its own skipped. Three real processes on one PostgreSQL database, two of them with a shifted
 * Date (test/fixtures/skew-clock.mjs): a revocation through any of them must reach the other two.
 */

const mainEntry = new URL('../../src/main.ts', import.meta.url).pathname;
const skewPreload = new URL('../fixtures/skew-clock.mjs', import.meta.url).href;
/** The README promises about a second; a loaded CI machine gets some slack on top. */
const reachWithinMs = 2000;

const servers: Record<'fast' | 'correct' | 'slow', { skewMs: number; process?: ServerProcess }> = {
  fast: { skewMs: 10 * 60_000 },
  correct: { skewMs: 0 },
  slow: { skewMs: -30_000 },
};
type Name = keyof typeof servers;
const names = Object.keys(servers) as Name[];

function url(name: Name, path: string): string {
  const port = servers[name].process?.port;
  assert.ok(port !== undefined, `${name} is running`);
  return `http://127.0.0.1:${port}${path}`;
}

async function meStatus(name: Name, token: string): Promise<number> {
  const res = await fetch(url(name, '/api/users/me'), { headers: { authorization: `Bearer ${token}` } });
  await res.arrayBuffer();
  return res.status;
}

describe('revocation across instances whose clocks disagree', {
  skip: await skipEngine('postgres'),
}, () => {
  let database: TestDatabaseEnv;
  before(async () => {
    database = await testDatabaseEnv('postgres');
    const env = {
      ...database.env,
      JWT_SECRET: 'clock-skew-test-secret-0123456789-0123456789',
      ARGON2_MEMORY_KIB: '1024',
      ARGON2_ITERATIONS: '1',
      RATE_LIMIT_MAX: '1000000',
      AUTH_RATE_LIMIT_MAX: '1000000',
      SHUTDOWN_GRACE_MS: '0',
    };
    // The first one migrates; the others start on the migrated schema.
    for (const name of names) {
      const { skewMs } = servers[name];
      servers[name].process = await startServerProcess(
        mainEntry,
        { ...env, CLOCK_SKEW_MS: String(skewMs) },
        90_000,
        skewMs === 0 ? [] : ['--import', skewPreload],
      );
    }
  });
  after(async () => {
    for (const name of names) {
      const child = servers[name].process?.child;
      if (child !== undefined && child.exitCode === null) {
        child.kill('SIGTERM');
        await servers[name].process?.exited();
      }
    }
    await database?.cleanup();
  });

  // The fast server goes first: under the old app-clock ordering its stamp, 10 minutes ahead,
  // moved every poller's high-water mark past all the revocations that followed.
  for (const revoker of names) {
    test(`logout-all through the ${revoker} server reaches the other two`, async () => {
      // Tokens issued by the slow server are acceptable to all three (the fast one sees them as
      // old, the others as a little old); a token from a faster clock would be "issued in the future".
      const name = uniqueName('skew');
      const registered = await fetch(url('slow', '/api/auth/register'), {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          email: `${name}@example.com`,
          username: name,
          password: 'skewed clocks 1 2 3',
        }),
      });
      assert.equal(registered.status, 201);
      const { accessToken } = (await registered.json()) as { accessToken: string };
      for (const other of names)
        assert.equal(await meStatus(other, accessToken), 200, `${other} accepts first`);

      const revoked = await fetch(url(revoker, '/api/auth/logout-all'), {
        method: 'POST',
        headers: { authorization: `Bearer ${accessToken}` },
      });
      assert.equal(revoked.status, 204);
      const at = performance.now();
      assert.equal(await meStatus(revoker, accessToken), 401, 'at once on the revoking server');
      for (const other of names.filter((n) => n !== revoker)) {
        while ((await meStatus(other, accessToken)) !== 401) {
          assert.ok(
            performance.now() - at < reachWithinMs,
            `the ${other} server still accepts the token ${reachWithinMs} ms after a revocation through the ${revoker} server`,
          );
          await sleep(20);
        }
        console.log(`${revoker} → ${other}: ${(performance.now() - at).toFixed(0)} ms`);
      }
    });
  }
});
