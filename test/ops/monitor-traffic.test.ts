import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { breaches, renderTable, type ServerWindow } from '../../src/ops/delivery/monitor.js';
import { inCi } from '../harness/services.js';

// scripts/monitor-traffic.sh without servers: shellcheck-clean, usage errors exit 2, an
// unreachable Prometheus exits 1 with a plain message, and the --env form's SLO arithmetic. Against
// a live Prometheus it runs in test/ops/monitoring-live.test.ts; with --env against real servers
// over SSH (a breach on a bad canary included) in test/ops/deploy-guards.test.ts.

const script = 'scripts/monitor-traffic.sh';
const run = (...args: string[]) =>
  spawnSync('bash', [script, ...args], { encoding: 'utf8', timeout: 60_000 });

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

test('--env: an unknown environment, a bad window or SLO exit 2 and say why', () => {
  const cases: Array<[string[], RegExp]> = [
    [['--env', 'no-such-env'], /no environment file .*deploy\/environments\/no-such-env\.json/],
    [
      ['--env', 'x', '--config', 'deploy/environments/example.json', '--seconds', '0'],
      /--seconds and --interval must be at least 1/,
    ],
    [
      ['--env', 'x', '--config', 'deploy/environments/example.json', '--max-5xx-ratio', '2'],
      /--max-5xx-ratio takes a ratio/,
    ],
    [
      ['--env', 'x', '--config', 'deploy/environments/example.json'],
      /refused: no pinned host key for app-1 \(10\.20\.0\.11\)/,
    ],
  ];
  for (const [args, message] of cases) {
    const result = run(...args);
    assert.equal(result.status, 2, `${args.join(' ')}: ${result.stderr}`);
    assert.match(result.stderr, message);
  }
});

test('an unreachable Prometheus exits 1 naming it', () => {
  const result = run('--once', '--prometheus', 'http://127.0.0.1:9');
  assert.equal(result.status, 1);
  assert.match(result.stderr, /cannot query Prometheus at http:\/\/127\.0\.0\.1:9/);
});

const row = (
  target: string,
  requests: number,
  errors: number,
  p95: number | null,
  extra: Partial<ServerWindow> = {},
) =>
  ({
    target,
    stats: { requests, errors, errorRatio: requests === 0 ? 0 : errors / requests, p95, restarts: 0 },
    seconds: 10,
    workers: 2,
    notReady: 0,
    samples: 6,
    unreachable: null,
    ...extra,
  }) satisfies ServerWindow;

test('--env SLO: 5xx ratio and p95 only with enough requests; not ready, restarts and silence always', () => {
  const limits = { maxErrorRatio: 0.01, maxP95Ms: 500 };
  assert.deepEqual(breaches([row('a', 1000, 10, 0.4)], limits), []);
  assert.deepEqual(breaches([row('a', 1000, 11, 0.4)], limits), ['a: 5xx ratio 1.10 % > 1.00 %']);
  assert.deepEqual(breaches([row('a', 1000, 0, 0.6)], limits), ['a: p95 600 ms > 500 ms']);
  assert.deepEqual(breaches([row('a', 19, 19, 9)], limits), [], 'a handful of requests says nothing');
  assert.deepEqual(breaches([row('a', 0, 0, null, { notReady: 2 })], limits), [
    'a: a worker was not ready in 2 of 6 samples',
  ]);
  assert.deepEqual(
    breaches([{ ...row('a', 0, 0, null), stats: null, unreachable: 'ssh: connect refused' }], limits),
    ['a: no answer (ssh: connect refused)'],
  );
});

test('--env table: one row per server and one for all', () => {
  const lines = renderTable([row('app-1', 1200, 0, 0.012), row('app-2', 600, 6, 0.2)]);
  assert.deepEqual(lines, [
    'server  req/s  requests     5xx     p95  workers',
    'app-1   120.0      1200  0.00 %   12 ms  2 (ready in every sample)',
    'app-2    60.0       600  1.00 %  200 ms  2 (ready in every sample)',
    'all     180.0      1800  0.33 %  200 ms  2/2 servers',
  ]);
});
