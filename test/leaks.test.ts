import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { redisUrl, skipUnless } from './harness/services.js';
import { waitUntil } from './harness/wait.js';

/**
 * The suite runner fails a run that leaves anything behind on the machine (operator walkthrough:
 * `npm test` left Redis keys with day-long TTLs and `shipshape-*` temp directories on a shared
 * server): a process of the run still alive, an entry in the run's temp directory, a Redis key under
 * the run's prefix. It names each, removes it, and exits non-zero. Shown on two fixture test files
 * run through the real runner, scripts/test.mjs (the check itself is scripts/test-leaks.mjs).
 */

const root = new URL('..', import.meta.url).pathname;

function withoutTestContext(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const { NODE_TEST_CONTEXT: _, ...rest } = env;
  return rest;
}

function runSuite(file: string): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['scripts/test.mjs', file],
      {
        cwd: root,
        timeout: 300_000,
        maxBuffer: 10 * 1024 * 1024,
        // A run of its own, not a subtest of this one (node --test refuses to nest otherwise).
        env: { ...withoutTestContext(process.env), SHIPSHAPE_TEST_LEAK_GRACE_MS: '2000' },
      },
      (error, stdout, stderr) =>
        resolve({ code: error ? Number(error.code ?? 1) : 0, output: `${stdout}${stderr}` }),
    );
  });
}

/** Running: exists and is not a zombie waiting for whoever adopted it to reap it. */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

describe('the test runner fails a run that leaves something behind', {
  skip: await skipUnless('redis'),
}, () => {
  test('a leaked process, temp directory and Redis key are named, removed, and fail the run', async () => {
    const { code, output } = await runSuite('test/fixtures/leaks/leaky.fixture.ts');
    assert.notEqual(code, 0, output);
    assert.match(output, /the run left \d+ thing\(s\) behind/);
    assert.match(output, /temp entry left behind: shipshape-leaky-/);
    const key = /Redis key left behind: (test:[0-9a-f]+:leaky)/.exec(output)?.[1];
    assert.ok(key, output);
    const pid = Number(/process (\d+) still running: .*setTimeout/.exec(output)?.[1]);
    assert.ok(pid > 0, output);
    await waitUntil(() => !running(pid), { what: `process ${pid} to be gone` });
    const redis = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
    try {
      assert.equal(await redis.exists(key), 0, 'the leaked key was deleted');
    } finally {
      redis.disconnect();
    }
  });

  test('a run that cleans up after itself passes and reports nothing', async () => {
    const { code, output } = await runSuite('test/fixtures/leaks/tidy.fixture.ts');
    assert.equal(code, 0, output);
    assert.doesNotMatch(output, /left behind|still running/);
  });
});
