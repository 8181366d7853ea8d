import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { inCi } from '../harness/services.js';

// scripts/monitor-traffic.sh without a Prometheus: shellcheck-clean, usage errors exit 2, an
// unreachable Prometheus exits 1 with a plain message. Against a live Prometheus it runs in
// test/ops/monitoring-live.test.ts.

const script = 'scripts/monitor-traffic.sh';
const run = (...args: string[]) =>
  spawnSync('bash', [script, ...args], { encoding: 'utf8', timeout: 30_000 });

test('shellcheck finds nothing', (t) => {
  const result = spawnSync('shellcheck', [script], { encoding: 'utf8' });
  if (result.error !== undefined) {
    const message = 'shellcheck is not installed; install it: sudo scripts/install-ops-tools.sh';
    if (inCi) throw new Error(`CI requires ${message}`);
    return t.skip(message);
  }
  assert.equal(result.status, 0, result.stdout);
});

test('usage errors exit 2 and say why', () => {
  for (const args of [['--bogus'], ['--interval', '0'], ['--interval'], ['--job', 'a b']]) {
    const result = run(...args);
    assert.equal(result.status, 2, `${args.join(' ')}: ${result.stderr}`);
    assert.match(result.stderr, /usage: /);
  }
});

test('an unreachable Prometheus exits 1 naming it', () => {
  const result = run('--once', '--prometheus', 'http://127.0.0.1:9');
  assert.equal(result.status, 1);
  assert.match(result.stderr, /cannot query Prometheus at http:\/\/127\.0\.0\.1:9/);
});
