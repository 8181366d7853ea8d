import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { describe, test } from 'node:test';
import type { Target } from '../../src/ops/delivery/environment.js';
import { type Check, evaluate, minNode, nodeOk, targetChecks } from '../../src/ops/delivery/health.js';

/**
 * health-check.sh's verdicts (src/ops/delivery/health.ts) from the release agent's `health` output
 * (scripts/release-agent.sh cmd_health: tab-separated records). The rule under test: a check nobody
 * answered fails; only what cannot apply yet is a skip. Over real SSH: test/ops/deploy-guards.test.ts.
 */

const now = Date.parse('2026-12-07T00:00:00Z');
const base = [
  'disk\t50000000\t100000000',
  'memory\t4000000\t8000000',
  'envfile\t600',
  'node\tv24.11.0',
  'current\t20261201T090000Z-aaaaaaa',
  'pm2\t6.0.8',
];
const readyBody = JSON.stringify({ status: 'ready', checks: { database: 'up', cache: 'up' } });
const output = (...lines: string[]) =>
  [...base, ...lines, 'certificate\tMar  1 00:00:00 2027 GMT', ''].join('\n');
const verdicts = (checks: Check[]) =>
  Object.fromEntries(checks.map((c) => [c.check, `${c.status} ${c.detail}`]));

describe('health-check verdicts', () => {
  test('every worker ready: everything ok', () => {
    const v = verdicts(evaluate('app-1', output(`ready\t0\t${readyBody}`, `ready\t1\t${readyBody}`), now));
    assert.deepEqual(
      Object.entries(v)
        .filter(([, s]) => !s.startsWith('ok'))
        .map(([k]) => k),
      [],
      JSON.stringify(v),
    );
    assert.equal(v.migrations, 'ok none pending');
    assert.equal(v.redis, 'ok up');
    assert.equal(v['workers ready'], 'ok 2/2');
  });

  test('no worker answered: database, Redis and migrations fail as unknown (the old code passed migrations and skipped Redis)', () => {
    for (const [what, lines] of [
      ['no answer on any port', ['ready\t0\t', 'ready\t1\t']],
      ['an HTML error page', ['ready\t0\t<html>502 Bad Gateway</html>']],
      ['no worker probed (no METRICS_PORT)', []],
    ] as Array<[string, string[]]>) {
      const checks = evaluate('app-1', output(...lines), now);
      const v = verdicts(checks);
      for (const check of ['database', 'redis', 'migrations', 'workers ready'])
        assert.match(v[check] ?? '', /^fail /, `${what}: ${check} is ${v[check]}`);
      assert.match(v.migrations ?? '', /unknown: no worker answered \/ready/, what);
      assert.match(v.redis ?? '', /unknown: no worker answered \/ready/, what);
      assert.ok(!checks.some((c) => c.status === 'skip' && c.check !== 'certificate'), what);
    }
  });

  test('the database down: migrations unknown (the schema was not checked) → fail; pending migrations → fail with the reason', () => {
    const down = JSON.stringify({
      status: 'unavailable',
      reason: 'database unreachable',
      checks: { database: 'down', cache: 'up' },
    });
    const v = verdicts(evaluate('app-1', output(`ready\t0\t${down}`), now));
    assert.equal(v.database, 'fail down');
    assert.equal(v.migrations, 'fail unknown: the database did not answer');
    const behind = JSON.stringify({
      status: 'unavailable',
      reason: 'schema behind: pending migrations (004_x); run `npm run db:migrate`',
      checks: { database: 'up', cache: 'degraded' },
    });
    const w = verdicts(evaluate('app-1', output(`ready\t0\t${behind}`), now));
    assert.match(w.migrations ?? '', /^fail schema behind: pending migrations \(004_x\)/);
    assert.equal(w.redis, 'fail degraded');
  });

  test('no release yet: the release checks are skips (they cannot apply), not passes', () => {
    const text = [
      'disk\t50000000\t100000000',
      'memory\t4000000\t8000000',
      'envfile\t600',
      'node\tv22.12.0',
      'current\t',
      'pm2\tnone',
      '',
    ].join('\n');
    const v = verdicts(evaluate('app-1', text, now));
    for (const check of ['pm2', 'database', 'redis', 'migrations', 'workers ready'])
      assert.match(v[check] ?? '', /^skip no release deployed yet/, check);
    assert.equal(v.node, 'ok v22.12.0 (needs ≥ 20.19.0)');
  });

  test("the Node minimum is package.json's engines.node (>=20.19): 20.18 fails, 20.19.0 passes", () => {
    const engines = (
      JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
        engines: { node: string };
      }
    ).engines.node;
    const semver = createRequire(import.meta.url)('semver') as { minVersion(r: string): { version: string } };
    assert.equal(minNode().join('.'), semver.minVersion(engines).version, engines);
    assert.deepEqual(minNode(), [20, 19, 0]);
    for (const [version, ok] of [
      ['v20.11.1', false],
      ['v20.18.3', false],
      ['v20.19.0', true],
      ['v20.20.1', true],
      ['v21.0.0', true],
      ['v24.11.0', true],
      ['v19.99.0', false],
      ['none', false],
    ] as Array<[string, boolean]>)
      assert.equal(nodeOk(version), ok, version);
    assert.match(
      verdicts(evaluate('app-1', output().replace('v24.11.0', 'v20.12.0'), now)).node ?? '',
      /^fail v20\.12\.0 \(needs ≥ 20\.19\.0\)/,
    );
  });

  test('an agent that stopped (shared/.env missing): the lines it printed stay, the missing env file fails as itself, nothing after it passes', () => {
    const target: Target = { name: 'app-2', host: '10.0.0.2', port: 22, user: 'deployer', dir: '/srv/app' };
    const checks = targetChecks(target, {
      code: 1,
      stdout: 'disk\t50000000\t100000000\nmemory\t4000000\t8000000\nenvfile\tmissing\n',
      stderr: 'release-agent: shared/.env is missing\n',
    });
    assert.deepEqual(
      checks.map((c) => `${c.check} ${c.status}`),
      ['ssh ok', 'disk ok', 'memory ok', 'env file fail', 'agent fail'],
    );
    assert.equal(checks[3]?.detail, 'shared/.env is missing');
    assert.match(
      checks[4]?.detail ?? '',
      /^stopped \(exit 1\): release-agent: shared\/\.env is missing; the checks after it did not run$/,
    );
    // ssh itself failing (255) is the one line there is.
    const unreachable = targetChecks(target, {
      code: 255,
      stdout: '',
      stderr: 'ssh: connect to host 10.0.0.2 port 22: Connection refused\n',
    });
    assert.deepEqual(
      unreachable.map((c) => `${c.check} ${c.status} ${c.detail}`),
      ['ssh fail ssh: connect to host 10.0.0.2 port 22: Connection refused'],
    );
    // A stop later on (a bad PM2_INSTANCES, after the release lines): no certificate skip, no pass.
    const late = targetChecks(target, {
      code: 1,
      stdout: `${base.join('\n')}\n`,
      stderr: 'release-agent: PM2_INSTANCES=many in shared/.env: expected a number of workers\n',
    });
    assert.deepEqual(
      late.filter((c) => c.status !== 'ok').map((c) => `${c.check} ${c.status}`),
      ['database fail', 'redis fail', 'migrations fail', 'workers ready fail', 'agent fail'],
    );
  });
});
