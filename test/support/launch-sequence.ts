import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  appendFileSync,
  cpSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { createDatabase } from '../../src/infra/database.js';
import { createPasswordHasher } from '../../src/modules/auth/passwords.js';
import { createUser } from '../../src/modules/users/users.service.js';
import { type Artifact, buildArtifact } from '../../src/ops/delivery/artifact.js';
import { type DeployTarget, replaceHostKey } from '../../stack/components/deploy-targets.js';
import type { StackStatus } from '../../stack/types.js';
import { skipUnlessNginx } from '../harness/nginx.js';
import { ensureBuilt } from '../harness/pm2.js';
import { inCi, skipUnless } from '../harness/services.js';
import { waitUntil } from '../harness/wait.js';
import { captureLogs, testConfig } from '../helper.js';
import { type EdgeClient, failed, type Outcome, startEdgeLoad } from './edge-load.js';
import { edgeRequest, ownStack, type TestStack } from './stack.js';

/**
 * In two parts, so each file stays well inside the runner's per-file deadline on a busy machine:
 * test/ops/deploy-launch.test.ts (deploys, a concurrent deploy, a failing install, an unknown
 * rollback target, host keys, secrets) and test/ops/deploy-rollback.test.ts (broken releases
 * rolled back by themselves, kill -9 of a deployer, rollback --to).
 *
 * The guide's launch sequence for real (issue 19): scripts/health-check.sh, scripts/deploy.sh,
 * scripts/rollback.sh against the growth stack's three app servers as deploy targets — each its own
 * Unix user, release layout and sshd on its own loopback address, host keys pinned — with real PM2,
 * PostgreSQL and Redis, and keep-alive load (product reads and idempotent orders) through nginx
 * during every deploy. One stack for the whole file; the scenarios run in order, each leaving the
 * servers serving.
 */

const root = new URL('../..', import.meta.url).pathname;

function skipReason(): string | false {
  if (process.getuid?.() !== 0) {
    const message = 'the deploy targets need root (sshd switches to each target user)';
    if (inCi) throw new Error(`CI requires ${message}`);
    return message;
  }
  if (!existsSync('/usr/sbin/sshd')) {
    const message = 'sshd is not installed; install it: sudo scripts/install-ops-tools.sh';
    if (inCi) throw new Error(`CI requires ${message}`);
    return message;
  }
  return false;
}
export const skip = skipReason() || skipUnlessNginx() || (await skipUnless('postgres', 'redis'));

export interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  readonly ms: number;
}

/** Every output of every script run here: no secret may appear in any of them. */
const transcripts: string[] = [];

/** Runs one of the scripts of `checkout` (this one unless told). */
export function start(
  script: string,
  args: string[],
  checkout = root,
): { child: ChildProcess; done: Promise<Run> } {
  const started = Date.now();
  const child = spawn('bash', [join(checkout, 'scripts', script), ...args], {
    cwd: checkout,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (c: string) => {
    stdout += c;
  });
  child.stderr?.setEncoding('utf8').on('data', (c: string) => {
    stderr += c;
  });
  const done = new Promise<Run>((resolve) => {
    child.once('close', (code, signal) => {
      transcripts.push(stdout, stderr);
      resolve({ code: code ?? (signal === null ? 1 : 128), stdout, stderr, ms: Date.now() - started });
    });
  });
  return { child, done };
}

export const runScript = (script: string, args: string[], checkout = root) =>
  start(script, args, checkout).done;

/** The release `current` names on a target ('' before the first deploy). */
export const currentOf = (t: DeployTarget) => {
  const link = join(t.dir, 'current');
  return existsSync(link)
    ? (readFileSync(join(link, 'release.json'), 'utf8').match(/"id":"([^"]+)"/)?.[1] ?? '')
    : '';
};
export const releaseLog = (t: DeployTarget) =>
  existsSync(join(t.dir, 'releases.log')) ? readFileSync(join(t.dir, 'releases.log'), 'utf8') : '';
export const locked = (t: DeployTarget) => existsSync(join(t.dir, '.deploy-lock'));
/** A target's PM2 daemon and workers (not its passing SSH sessions): who serves. */
export const servingPids = (t: DeployTarget) =>
  spawnSync('ps', ['-u', t.user, '-o', 'pid=,args='], { encoding: 'utf8' })
    .stdout.split('\n')
    .filter((line) => /PM2 v\d|\/current\/dist\/main\.js/.test(line))
    .map((line) => line.trim().split(/\s+/)[0])
    .sort()
    .join(',');

/** A release of this checkout under `out` with a random commit, changed by `mutate` if given. */
export const testArtifact = (out: string, version: string, mutate?: (dir: string) => void) =>
  buildArtifact({
    root,
    out,
    cacheDir: join(out, 'cache'),
    version,
    commit: randomBytes(20).toString('hex'),
    ...(mutate === undefined ? {} : { mutate }),
  });

export type Part = 'deploys' | 'rollbacks';

export function launchSequence(part: Part): void {
  describe(`launch sequence over SSH (${part})`, { skip }, () => {
    let stack: TestStack;
    let status: StackStatus;
    let targets: DeployTarget[];
    let config: string;
    let https = '';
    let ca = '';
    let productId = '';
    let adminName = '';
    let databaseUrl = '';
    let work = '';
    const artifacts: Record<string, Artifact> = {};
    const figures: string[] = [];
    let firstOctet = 60;

    /** The test's environment: the stack's file with a short watch and a fast lock staleness. */
    // Staleness well above what a rollback's read-only pass takes on a busy machine (≈10 s seen), so
    // the attempt right after the kill meets a lock that is not stale yet. The smoke keeps the
    // default 60 s: under load a healthy release took 15 s to become ready (CI, 10 s of it before
    // its first log line), and the release that never becomes ready costs the whole bound once.
    const settings = { readySeconds: 60, watchSeconds: 6, lockHeartbeatSeconds: 2, lockStaleSeconds: 25 };

    const currents = () => targets.map(currentOf);
    const releaseLogs = () => targets.map(releaseLog);
    const locks = () => targets.map(locked);
    const pids = () => targets.map(servingPids);

    async function customers(count: number): Promise<EdgeClient[]> {
      firstOctet += 1;
      const octet = firstOctet;
      return Promise.all(
        Array.from({ length: count }, async (_, i) => {
          const localAddress = `127.0.${octet}.${i + 1}`;
          const name = `dl${octet}x${i}${randomBytes(3).toString('hex')}`;
          const res = await edgeRequest(`${https}/api/auth/register`, {
            method: 'POST',
            ca,
            localAddress,
            body: JSON.stringify({
              email: `${name}@example.com`,
              username: name,
              password: 'launch sequence 1',
            }),
          });
          assert.equal(res.status, 201, res.body);
          return { localAddress, accessToken: JSON.parse(res.body).accessToken as string };
        }),
      );
    }

    /**
     * Runs `work` under keep-alive load through nginx; then: no request failed, and every order the
     * clients were told about (201) is in the database exactly once, and no other order was made.
     */
    async function underLoad<T>(
      name: string,
      work: () => Promise<T>,
    ): Promise<{ result: T; outcomes: readonly Outcome[] }> {
      const tag = `launch-${name}-${randomBytes(3).toString('hex')}`;
      const clients = await customers(4);
      const load = startEdgeLoad({ baseUrl: https, ca, clients, productId, tag });
      await waitUntil(() => load.count() >= 40, { timeoutMs: 60_000, what: 'warm-up traffic' });
      let result: T;
      try {
        result = await work();
        const count = load.count();
        await waitUntil(() => load.count() >= count + 40, {
          timeoutMs: 60_000,
          what: 'traffic after the change',
        });
      } finally {
        await load.stop();
      }
      const outcomes = load.outcomes();
      const failures = outcomes.filter(failed);
      const posts = outcomes.filter((o) => o.method === 'POST');
      const acknowledged = posts.filter((o) => o.orderId !== undefined).map((o) => o.orderId as string);
      const client = new pg.Client({ connectionString: databaseUrl });
      await client.connect();
      let stored: string[];
      try {
        const { rows } = await client.query<{ id: string }>(
          `SELECT o.id FROM orders o WHERE o.user_id IN (SELECT DISTINCT user_id FROM idempotency_keys WHERE key LIKE $1)`,
          [`${tag}-%`],
        );
        stored = rows.map((r) => r.id);
      } finally {
        await client.end();
      }
      figures.push(
        `${name}: ${outcomes.length} requests (${posts.length} orders) through nginx, ${failures.length} failed; statuses ${JSON.stringify(
          outcomes.reduce<Record<string, number>>((acc, o) => {
            acc[String(o.status ?? o.error)] = (acc[String(o.status ?? o.error)] ?? 0) + 1;
            return acc;
          }, {}),
        )}`,
      );
      assert.deepEqual(failures.slice(0, 5), [], `${name}: no request failed`);
      assert.equal(new Set(acknowledged).size, acknowledged.length, 'one order id per acknowledged order');
      assert.deepEqual(
        [...stored].sort(),
        [...acknowledged].sort(),
        'every acknowledged order is stored, once, and no other',
      );
      return { result, outcomes };
    }

    /** After the first deploy (one server at a time, the default), app-2 and app-3 switch together. */
    const deployArgs = (artifact: Artifact, maxParallel = 2) => [
      '--env',
      'local',
      '--config',
      config,
      '--artifact',
      artifact.dir,
      '--max-parallel',
      String(maxParallel),
    ];

    before(async () => {
      await ensureBuilt();
      stack = await ownStack('growth', ['--deploy-targets', '--env', 'RATE_LIMIT_MAX=1000000']);
      status = stack.status();
      ca = readFileSync(status.caFile ?? '', 'utf8');
      https = (status.entry as { https: string }).https;
      databaseUrl = status.databases[0]?.url ?? '';
      const base = join(status.stateDir, 'deploy');
      targets = JSON.parse(readFileSync(join(base, 'targets.json'), 'utf8')) as DeployTarget[];
      config = join(base, 'test.json');
      writeFileSync(
        config,
        JSON.stringify({ ...JSON.parse(readFileSync(join(base, 'local.json'), 'utf8')), ...settings }),
      );

      work = mkdtempSync(join(tmpdir(), 'shipshape-artifacts-'));
      const build = (version: string, mutate?: (dir: string) => void) => {
        artifacts[version] = testArtifact(work, version, mutate);
      };
      /** dist/main.js becomes `wrapper`, which may load the real one as ./main-real.js. */
      const wrapMain = (wrapper: string) => (dir: string) => {
        renameSync(join(dir, 'dist', 'main.js'), join(dir, 'dist', 'main-real.js'));
        writeFileSync(join(dir, 'dist', 'main.js'), wrapper);
      };
      build('v1.0.0');
      build('v2.0.0');
      // Healthy at first; a few seconds after it became ready under PM2 its readiness starts
      // failing (as when a dependency it checks breaks after boot). It keeps answering everything
      // else, so the clients never notice; only the gate or the canary watch can.
      if (part === 'rollbacks')
        build(
          'v3.0.0-late',
          wrapMain(`import http from 'node:http';
let readyAt = 0;
const send = process.send?.bind(process);
if (send !== undefined)
  process.send = (message, ...rest) => {
    if (message === 'ready') readyAt = Date.now();
    return send(message, ...rest);
  };
const emit = http.Server.prototype.emit;
http.Server.prototype.emit = function (event, req, res, ...rest) {
  if (event === 'request' && readyAt > 0 && Date.now() - readyAt > 4000 && req.url === '/ready') {
    res.writeHead(503, { 'content-type': 'application/json' });
    res.end('{"status":"unavailable","reason":"v3.0.0-late: broken a few seconds after boot"}');
    return true;
  }
  return emit.call(this, event, req, res, ...rest);
};
await import('./main-real.js');
`),
        );
      // Never becomes ready on app-3 (hangs at start-up there; fine on the others).
      if (part === 'rollbacks')
        build(
          'v3.0.0-app3',
          wrapMain(`if (process.env.PM2_APP_NAME === 'app-3') {
  console.error('v3.0.0-app3: hanging at start-up on this host');
  setInterval(() => {}, 1 << 30);
} else await import('./main-real.js');
`),
        );
      // A build whose code cannot load (as a missing native module or a broken bundle would).
      if (part === 'deploys')
        build('v2.1.0-broken', (dir) =>
          writeFileSync(join(dir, 'dist', 'app.js'), "\nthrow new Error('broken build');\n", { flag: 'a' }),
        );
      if (part === 'deploys') build('v4.0.0');

      // An admin, made the way the CLI makes one, creates a product the load cannot sell out.
      const cfg = testConfig({ DATABASE_URL: databaseUrl });
      const handle = createDatabase(cfg.database, captureLogs().logger);
      const name = `launchadmin${randomBytes(4).toString('hex')}`;
      try {
        await createUser(handle.db, createPasswordHasher(cfg.auth), {
          email: `${name}@example.com`,
          username: name,
          password: 'launch admin password',
          role: 'admin',
        });
      } finally {
        await handle.close();
      }
      adminName = name;
    });

    after(async () => {
      console.log(`deploy figures:\n  ${figures.join('\n  ')}`);
      if (stack !== undefined) await stack.release();
      if (work !== '') rmSync(work, { recursive: true, force: true });
    });

    async function createProduct(admin: string): Promise<string> {
      const login = await edgeRequest(`${https}/api/auth/login`, {
        method: 'POST',
        ca,
        localAddress: '127.0.0.50',
        body: JSON.stringify({ login: admin, password: 'launch admin password' }),
      });
      assert.equal(login.status, 200, login.body);
      const created = await edgeRequest(`${https}/api/products`, {
        method: 'POST',
        ca,
        localAddress: '127.0.0.50',
        headers: { authorization: `Bearer ${JSON.parse(login.body).accessToken}` },
        body: JSON.stringify({
          sku: `LAUNCH-${randomBytes(4).toString('hex')}`,
          name: 'Launch',
          price: '9.99',
          stock: 1e9,
        }),
      });
      assert.equal(created.status, 201, created.body);
      return JSON.parse(created.body).id as string;
    }

    if (part === 'deploys')
      test('without pinned host keys nothing runs: exit 2, and no server was touched', async () => {
        const unpinned = join(work, 'unpinned.json');
        writeFileSync(
          unpinned,
          JSON.stringify({
            ...JSON.parse(readFileSync(config, 'utf8')),
            knownHosts: join(work, 'empty_known_hosts'),
          }),
        );
        writeFileSync(join(work, 'empty_known_hosts'), '');
        const run = await runScript('deploy.sh', [
          '--env',
          'local',
          '--config',
          unpinned,
          '--artifact',
          (artifacts['v1.0.0'] as Artifact).dir,
        ]);
        assert.equal(run.code, 2, run.stderr);
        assert.match(run.stderr, /no pinned host key for app-1 .*app-2 .*app-3/);
        assert.deepEqual(releaseLogs(), ['', '', '']);
        assert.deepEqual(locks(), [false, false, false]);
      });

    if (part === 'deploys')
      test('health-check.sh before the first release: every check passes or says why it cannot apply yet; --json', async () => {
        const run = await runScript('health-check.sh', ['--env', 'local', '--config', config, '--json']);
        assert.equal(run.code, 0, run.stdout + run.stderr);
        const report = JSON.parse(run.stdout) as {
          checks: Array<{ target: string; check: string; status: string }>;
        };
        assert.equal(report.checks.filter((c) => c.status === 'fail').length, 0);
        for (const check of ['ssh', 'disk', 'memory', 'env file', 'node'])
          assert.deepEqual(
            report.checks.filter((c) => c.check === check).map((c) => c.status),
            ['ok', 'ok', 'ok'],
            check,
          );
        assert.ok(report.checks.some((c) => c.check === 'workers ready' && c.status === 'skip'));
      });

    test('deploy v1: every server installs it, switches and answers /ready through nginx', async () => {
      const v1 = artifacts['v1.0.0'] as Artifact;
      const run = await runScript('deploy.sh', deployArgs(v1, part === 'deploys' ? 1 : 2));
      assert.equal(run.code, 0, run.stdout + run.stderr);
      assert.deepEqual(currents(), [v1.manifest.id, v1.manifest.id, v1.manifest.id]);
      const ready = await edgeRequest(`${https}/ready`, { ca });
      assert.equal(ready.status, 200, ready.body);
      productId = await createProduct(adminName);
      figures.push(
        `v1 (first deploy, dependencies shipped to 3 servers, ${part === 'deploys' ? 'one server at a time' : 'app-2 and app-3 together'}): ${(run.ms / 1000).toFixed(1)} s`,
      );
      const health = await runScript('health-check.sh', ['--env', 'local', '--config', config]);
      assert.equal(health.code, 0, health.stdout);
      assert.match(health.stdout, /ok +app-3 +workers ready +1\/1/);
    });

    if (part === 'deploys')
      test('v2 under load, with a second deploy started at the same time: exactly one runs; 0 failed requests', async () => {
        const v2 = artifacts['v2.0.0'] as Artifact;
        const { result } = await underLoad('v2', async () => {
          const first = start('deploy.sh', deployArgs(v2));
          await sleep(300);
          const second = start('deploy.sh', deployArgs(v2));
          return Promise.all([first.done, second.done]);
        });
        const codes = result.map((r) => r.code).sort();
        assert.deepEqual(codes, [0, 3], result.map((r) => r.stdout + r.stderr).join('\n----\n'));
        const refused = result.find((r) => r.code === 3) as Run;
        assert.match(refused.stderr, /deploy lock is held \(owner=/);
        assert.deepEqual(currents(), [v2.manifest.id, v2.manifest.id, v2.manifest.id]);
        figures.push(
          `v2: deployed in ${((result.find((r) => r.code === 0) as Run).ms / 1000).toFixed(1)} s; the concurrent deploy exited 3 after ${(refused.ms / 1000).toFixed(1)} s`,
        );
      });

    if (part === 'deploys')
      test('a release that cannot load fails at install: current, the PM2 workers and the traffic untouched', async () => {
        const v2 = artifacts['v2.0.0'] as Artifact;
        const before = { currents: currents(), pids: pids() };
        assert.ok(
          before.pids.every((p) => p.split(',').length === 2),
          `a daemon and a worker each: ${before.pids}`,
        );
        const { result: run } = await underLoad('broken-install', () =>
          runScript('deploy.sh', deployArgs(artifacts['v2.1.0-broken'] as Artifact)),
        );
        assert.equal(run.code, 1, run.stdout + run.stderr);
        assert.match(run.stderr, /does not load on this server[\s\S]*nothing was switched/);
        assert.deepEqual(currents(), [v2.manifest.id, v2.manifest.id, v2.manifest.id]);
        assert.deepEqual({ currents: currents(), pids: pids() }, before);
      });

    if (part === 'deploys')
      test('a build that fails (a type error in the commit being deployed): deploy.sh stops before contacting any server, exit 1; current, the workers and the traffic untouched', async () => {
        // A checkout of its own (sources and scripts, this one's node_modules) with a type error.
        const checkout = mkdtempSync(join(tmpdir(), 'shipshape-broken-build-'));
        try {
          for (const entry of ['src', 'scripts', 'package.json', 'tsconfig.json', 'tsconfig.build.json'])
            cpSync(join(root, entry), join(checkout, entry), { recursive: true });
          symlinkSync(join(root, 'node_modules'), join(checkout, 'node_modules'));
          appendFileSync(
            join(checkout, 'src', 'main.ts'),
            "\nexport const broken: number = 'not a number';\n",
          );
          const before = { currents: currents(), pids: pids(), logs: targets.map(releaseLog) };
          const { result: run } = await underLoad('broken-build', () =>
            runScript('deploy.sh', ['--env', 'local', '--config', config], checkout),
          );
          assert.equal(run.code, 1, run.stdout + run.stderr);
          assert.match(run.stdout + run.stderr, /error TS2322/);
          assert.match(
            run.stderr,
            /the build failed \(above\): nothing was shipped, no server was contacted/,
          );
          assert.ok(!existsSync(join(checkout, '.release-cache')), 'no artifact was made');
          assert.deepEqual({ currents: currents(), pids: pids(), logs: targets.map(releaseLog) }, before);
        } finally {
          rmSync(checkout, { recursive: true, force: true });
        }
      });

    if (part === 'rollbacks')
      test('v2 (the release the broken ones must fall back to)', async () => {
        const v2 = artifacts['v2.0.0'] as Artifact;
        const run = await runScript('deploy.sh', deployArgs(v2));
        assert.equal(run.code, 0, run.stdout + run.stderr);
        assert.deepEqual(currents(), [v2.manifest.id, v2.manifest.id, v2.manifest.id]);
        figures.push(`v2 (no load): ${(run.ms / 1000).toFixed(1)} s`);
      });

    if (part === 'rollbacks')
      test('v3 whose readiness fails a few seconds after boot: the gate or the canary watch catches it, the canary is rolled back, exit 1, 0 failed requests', async () => {
        const v2 = artifacts['v2.0.0'] as Artifact;
        const { result: run } = await underLoad('v3-late', () =>
          runScript('deploy.sh', deployArgs(artifacts['v3.0.0-late'] as Artifact)),
        );
        assert.equal(run.code, 1, run.stdout + run.stderr);
        // Caught by the gate right after the reload, or by the watch window (on a busy machine the
        // gate itself can take longer than the 4 s the release lives).
        const caught =
          /app-1: (the canary failed its watch|a worker stopped answering \/ready during the canary watch|ready failed)/.exec(
            run.stderr,
          );
        assert.ok(caught, run.stderr);
        assert.match(run.stderr, /automatic rollback of app-1 done in ([\d.]+)s/);
        assert.doesNotMatch(run.stdout, /app-2: switched/);
        assert.deepEqual(currents(), [v2.manifest.id, v2.manifest.id, v2.manifest.id]);
        figures.push(
          `v3-late: caught by "${caught[1]}"; failed and rolled back in ${(run.ms / 1000).toFixed(1)} s total; ${/automatic rollback of [^\n]*/.exec(run.stderr)?.[0]}`,
        );
      });

    if (part === 'rollbacks')
      test('v3 that never becomes ready on app-3: app-1 and app-2 (already switched) are rolled back, exit 1, 0 failed requests', async () => {
        const v2 = artifacts['v2.0.0'] as Artifact;
        const { result: run } = await underLoad('v3-app3', () =>
          runScript('deploy.sh', deployArgs(artifacts['v3.0.0-app3'] as Artifact)),
        );
        assert.equal(run.code, 1, run.stdout + run.stderr);
        assert.match(run.stdout, /app-2: switched, reloaded/);
        assert.match(run.stderr, /app-3: smoke failed[\s\S]*did not become ready within 60s/);
        assert.match(run.stderr, /automatic rollback of app-1, app-2 done/);
        assert.deepEqual(currents(), [v2.manifest.id, v2.manifest.id, v2.manifest.id]);
        figures.push(
          `v3-app3: failed and rolled back in ${(run.ms / 1000).toFixed(1)} s total; ${/automatic rollback of [^\n]*/.exec(run.stderr)?.[0]}`,
        );
      });

    if (part === 'deploys')
      test('an unknown rollback target: exit 2, nothing changed', async () => {
        const before = { currents: currents(), logs: releaseLogs() };
        const run = await runScript('rollback.sh', ['--env', 'local', '--config', config, '--to=v9.9.9']);
        assert.equal(run.code, 2, run.stdout + run.stderr);
        assert.match(run.stderr, /no release "v9.9.9" on app-1, app-2, app-3/);
        assert.deepEqual({ currents: currents(), logs: releaseLogs() }, before);
        const listed = await runScript('rollback.sh', ['--env', 'local', '--config', config, '--list']);
        assert.equal(listed.code, 0, listed.stderr);
        assert.match(listed.stdout, /\* \S+ +v2\.0\.0 .*current, good/);
        assert.match(listed.stdout, /v1\.0\.0 .*good/);
      });

    if (part === 'deploys')
      test('kill -9 of a deployer holding the lock: refused until the heartbeat is stale, then rollback --to=v1 reclaims it; 0 failed requests', async () => {
        const v1 = artifacts['v1.0.0'] as Artifact;
        const { result } = await underLoad('rollback-v1', async () => {
          const victim = start('deploy.sh', deployArgs(artifacts['v4.0.0'] as Artifact));
          await waitUntil(() => locks().every(Boolean), {
            timeoutMs: 120_000,
            intervalMs: 20,
            what: 'the deployer to hold every lock',
          });
          victim.child.kill('SIGKILL');
          await victim.done;
          // The newest heartbeat on any server, read again each time: one the deployer had sent
          // just before it died still lands after the kill (its ssh runs on without the parent).
          const lastBeat = () =>
            Math.max(...targets.map((t) => statSync(join(t.dir, '.deploy-lock', 'heartbeat')).mtimeMs));
          const beat = lastBeat();
          const early = await runScript('rollback.sh', ['--env', 'local', '--config', config, '--to=v1.0.0']);
          const heartbeatAge = (Date.now() - beat) / 1000;
          assert.equal(early.code, 3, early.stdout + early.stderr);
          assert.match(early.stderr, /deploy lock is held/);
          await waitUntil(() => Date.now() - lastBeat() > settings.lockStaleSeconds * 1000 + 1000, {
            timeoutMs: 90_000,
            what: 'every heartbeat to be stale',
          });
          const reclaimed = await runScript('rollback.sh', [
            '--env',
            'local',
            '--config',
            config,
            '--to=v1.0.0',
          ]);
          return { early, reclaimed, heartbeatAge };
        });
        const { early, reclaimed, heartbeatAge } = result;
        assert.equal(reclaimed.code, 0, reclaimed.stdout + reclaimed.stderr);
        assert.match(reclaimed.stdout, /app-1: reclaimed a stale deploy lock \(owner=.*heartbeat \d+s ago/);
        assert.deepEqual(currents(), [v1.manifest.id, v1.manifest.id, v1.manifest.id]);
        assert.deepEqual(locks(), [false, false, false], 'the lock is released');
        figures.push(
          `kill -9 + rollback --to=v1: refused (exit 3) with a ${heartbeatAge.toFixed(1)} s old heartbeat after ${(early.ms / 1000).toFixed(1)} s; reclaimed after staleness (${settings.lockStaleSeconds} s); ${/rollback --to=\S+ done in [\d.]+s/.exec(reclaimed.stdout)?.[0]}`,
        );
      });

    if (part === 'deploys')
      test('a changed host key: the deploy aborts before running anything on any server', async () => {
        const before = { currents: currents(), logs: releaseLogs() };
        await replaceHostKey(targets[1] as DeployTarget);
        const run = await runScript('deploy.sh', deployArgs(artifacts['v2.0.0'] as Artifact));
        assert.equal(run.code, 1, run.stdout + run.stderr);
        assert.match(run.stderr, /app-2: the host key of \[127\.0\.0\.3\]:\d+ does not match/);
        assert.deepEqual({ currents: currents(), logs: releaseLogs() }, before);
        assert.deepEqual(locks(), [false, false, false]);
      });

    test('no secret value appears in any output of any script run here', () => {
      const secrets = targets.flatMap((t) =>
        ['jwt-secret', 'database-url'].map((f) =>
          readFileSync(join(t.dir, 'shared', 'secrets', f), 'utf8').trim(),
        ),
      );
      const password = new URL(secrets[1] ?? '').password;
      assert.ok(password.length >= 16 && (secrets[0] ?? '').length >= 32);
      const all = transcripts.join('\n');
      assert.ok(all.length > 1000, 'the transcripts are there');
      for (const secret of [...secrets, password]) assert.ok(!all.includes(secret), 'a secret was printed');
    });
  });
}
