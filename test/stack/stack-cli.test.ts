import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import type { StackStatus } from '../../stack/types.js';
import { skipUnless } from '../harness/services.js';
import { edgeRequest, sharedStack, stackCli } from '../support/stack.js';
import { assertNothingLeft } from '../support/stack-leaks.js';

/**
 * `npm run stack` below the growth stage, through the real CLI: up, status --json, a refused second
 * up, down, and nothing left behind. (The growth stage is covered by test/stack/growth.test.ts,
 * which brings one up for its own suites and takes it down the same way.)
 */
const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function lifecycle(stage: 'prototype' | 'mvp', check: (s: StackStatus) => Promise<void>) {
  const parent = mkdtempSync(join(tmpdir(), `shipshape-stack-cli-${stage}-`));
  dirs.push(parent);
  const stateDir = join(parent, 'stack');
  let status: StackStatus | undefined;
  try {
    await stackCli(stateDir, 'up', '--stage', stage);
    const printed = await stackCli(stateDir, 'status', '--json');
    status = JSON.parse(printed.stdout) as StackStatus;
    assert.equal(status.stage, stage);
    assert.equal(status.running, true);
    assert.equal(status.stateDir, stateDir);
    assert.equal(status.caFile, null);
    assert.equal(status.nginx, null);
    assert.equal(typeof status.entry, 'string');
    const entry = new URL(status.entry as string);
    assert.equal(entry.hostname, '127.0.0.1', 'loopback only');
    const ready = await edgeRequest(`${status.entry}/ready`);
    assert.equal(ready.status, 200, ready.body);
    for (const server of status.servers) {
      assert.ok(server.pids.length > 0);
      for (const url of server.metricsUrls) assert.equal((await edgeRequest(url)).status, 200, url);
    }
    await check(status);

    const second = await stackCli(stateDir, 'up', '--stage', stage).then(
      () => ({ code: 0, stderr: '' }),
      (err: { code: number; stderr: string }) => err,
    );
    assert.equal(second.code, 3, 'a second up exits non-zero');
    assert.match(second.stderr, /already exists .*running.*stop it first/s);
  } finally {
    await stackCli(stateDir, 'down');
  }
  if (status !== undefined) await assertNothingLeft(status);
  const again = await stackCli(stateDir, 'down');
  assert.match(again.stdout, /nothing to stop/);
}

const skipPostgres = await skipUnless('postgres');

describe('npm run stack: prototype and mvp', () => {
  test('prototype: one process on SQLite in the state directory', async () => {
    await lifecycle('prototype', async (status) => {
      assert.equal(status.servers.length, 1);
      assert.equal(status.servers[0]?.pids.length, 1);
      assert.deepEqual(
        status.databases.map((d) => [d.role, d.url]),
        [['primary', `file:${join(status.stateDir, 'shipshape.db')}`]],
      );
    });
  });

  test('mvp: a PM2 cluster on a throwaway PostgreSQL database', { skip: skipPostgres }, async () => {
    await lifecycle('mvp', async (status) => {
      assert.equal(status.servers.length, 1);
      assert.equal(status.servers[0]?.pids.length, 2, 'two PM2 workers');
      assert.equal(status.servers[0]?.metricsUrls.length, 2, 'one metrics port per worker');
      assert.equal(status.databases.length, 1);
      assert.match(status.databases[0]?.url ?? '', /^postgres:\/\/.*\/shipshape_stack_[0-9a-f]+$/);
      const products = await edgeRequest(`${status.entry}/api/products`);
      assert.equal(products.status, 200, products.body);
    });
  });

  test('sharedStack: files asking for the same stage at once get one stack, brought up once', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'shipshape-shared-'));
    dirs.push(dir);
    // Two "files" at once: one brings it up under the lock, the other waits and attaches.
    const [a, b] = await Promise.all([sharedStack('prototype', [], dir), sharedStack('prototype', [], dir)]);
    try {
      assert.equal(a.stateDir, b.stateDir);
      const pids = a.status().servers[0]?.pids;
      const c = await sharedStack('prototype', [], dir);
      assert.deepEqual(c.status().servers[0]?.pids, pids, 'attached, not restarted');
      await c.release();
      assert.equal(c.status().running, true, 'release() leaves a shared stack to the runner');
    } finally {
      const last = a.status();
      await stackCli(a.stateDir, 'down');
      await assertNothingLeft(last);
    }
  });

  test('usage errors exit 2 and name the problem', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'shipshape-stack-usage-'));
    dirs.push(dir);
    for (const args of [['up'], ['up', '--stage', 'nope'], ['frobnicate']]) {
      const result = await stackCli(dir, ...args).then(
        () => ({ code: 0, stderr: '' }),
        (err: { code: number; stderr: string }) => err,
      );
      assert.equal(result.code, 2, args.join(' '));
      assert.match(result.stderr, /usage: npm run stack/);
    }
    const status = await stackCli(dir, 'status', '--json').catch(
      (err: { code: number; stdout: string }) => err,
    );
    assert.equal((status as { code: number }).code, 3);
    assert.deepEqual(JSON.parse((status as { stdout: string }).stdout), { running: false, stateDir: dir });
  });
});
