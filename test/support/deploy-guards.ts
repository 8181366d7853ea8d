import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  chownSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import type { Artifact } from '../../src/ops/delivery/artifact.js';
import type { DeployTarget } from '../../stack/components/deploy-targets.js';
import { ensureBuilt } from '../harness/pm2.js';
import { selfSignedCertificate } from '../harness/tls.js';
import { waitUntil } from '../harness/wait.js';
import {
  currentOf,
  locked,
  type Run,
  releaseLog,
  runScript,
  servingPids,
  skip,
  start,
  testArtifact,
} from './launch-sequence.js';
import { ownStack, type TestStack } from './stack.js';

/**
 * In two parts, each its own stack so each file stays inside the runner's per-file deadline on a
 * busy machine: test/ops/deploy-guards.test.ts ("locks": the certificate check, --lock-wait,
 * --dry-run, the contract-migration refusal, deploying to app-3) and
 * test/ops/deploy-canary.test.ts ("canary": monitor-traffic.sh and the bad canary, on app-1 and
 * app-2).
 *
 * The deploy guards the launch-sequence tests (test/ops/deploy-launch.test.ts,
 * deploy-rollback.test.ts) leave out, over the same real targets — the growth stack's three app
 * servers, each its own Unix user, release layout and sshd on loopback, real PM2, PostgreSQL and
 * Redis — one stack per part, scenarios in order:
 * the certificate-expiry check of health-check.sh against openssl-made certificates;
 * `deploy.sh --lock-wait` (a deploy waits for another's lock, then proceeds; a short wait exits 3);
 * `--dry-run` (the plan, and no server changed); `monitor-traffic.sh --env` (a table per server;
 * exit 1 on a breach); a canary that serves 500s (a release built from a patched copy of the
 * tree), rolled back by the watch with the other servers never switched; and a rollback across an
 * applied contract migration, refused with exit 5.
 *
 * Load here goes straight to each server's port (not through nginx), so each server's own share is
 * known: the canary's 500s must show on the canary and nowhere else.
 */

const contract = '005_deploy_probe_contract';

export type GuardPart = 'locks' | 'canary';

export function deployGuards(part: GuardPart): void {
  describe(`deploy guards over SSH (${part})`, { skip }, () => {
    let stack: TestStack;
    let targets: DeployTarget[];
    let work = '';
    const artifacts: Record<string, Artifact> = {};
    const configs: Record<string, string> = {};
    const figures: string[] = [];
    let databaseUrl = '';
    const fileStarted = Date.now();

    const settings = {
      readySeconds: 60,
      watchSeconds: 0,
      lockHeartbeatSeconds: 2,
      // Longer than any wait here: nothing is reclaimed while its holder is alive and busy.
      lockStaleSeconds: 90,
      // The SLO monitor-traffic.sh holds servers to; p95 generous for two loaded cores.
      sloMaxErrorRatio: 0.01,
      sloMaxP95Ms: 3000,
    };
    const args = (env: string, artifact: Artifact, ...more: string[]) => [
      '--env',
      env,
      '--config',
      configs[env] as string,
      '--artifact',
      artifact.dir,
      ...more,
    ];

    /** Everything a deploy could change on a server. */
    const state = (t: DeployTarget) => ({
      releases: readdirSync(join(t.dir, 'releases')).sort(),
      current: existsSync(join(t.dir, 'current')) ? readlinkSync(join(t.dir, 'current')) : '',
      log: releaseLog(t),
      good: existsSync(join(t.dir, 'good-releases'))
        ? readFileSync(join(t.dir, 'good-releases'), 'utf8')
        : '',
      deps: readdirSync(join(t.dir, 'shared', 'deps')).sort(),
      lock: locked(t),
      pids: servingPids(t),
    });

    /** The servers this part deploys to: app-1 and app-2, or app-3. */
    const used = () => (part === 'canary' ? targets.slice(0, 2) : targets.slice(2));

    /** Keep-alive product reads straight to every used server, two at a time each; statuses per server. */
    function directLoad() {
      let stopped = false;
      const statuses = new Map<string, Record<string, number>>(used().map((t) => [t.name, {}]));
      const loops = used().flatMap((t) =>
        [0, 1].map(async () => {
          const seen = statuses.get(t.name) as Record<string, number>;
          while (!stopped) {
            let key: string;
            try {
              const res = await fetch(`http://${t.host}:${t.port}/api/products?limit=5`);
              await res.arrayBuffer();
              key = String(res.status);
            } catch (err) {
              key = (err as Error).message;
              await sleep(50);
            }
            seen[key] = (seen[key] ?? 0) + 1;
          }
        }),
      );
      return {
        statuses,
        count: (name: string) => Object.values(statuses.get(name) ?? {}).reduce((a, b) => a + b, 0),
        stop: async () => {
          stopped = true;
          await Promise.all(loops);
        },
      };
    }

    /** Runs a script and collects its stdout as it comes (to act on a line while it runs). */
    function watched(script: string, argv: string[]) {
      const run = start(script, argv);
      let out = '';
      run.child.stdout?.on('data', (c: string) => {
        out += c;
      });
      let finished = 0;
      const done = run.done.then((r) => {
        finished = Date.now();
        return r;
      });
      return { done, out: () => out, finished: () => finished };
    }

    before(async () => {
      await ensureBuilt();
      stack = await ownStack('growth', ['--deploy-targets', '--env', 'RATE_LIMIT_MAX=1000000']);
      const status = stack.status();
      databaseUrl = status.databases[0]?.url ?? '';
      const base = join(status.stateDir, 'deploy');
      targets = JSON.parse(readFileSync(join(base, 'targets.json'), 'utf8')) as DeployTarget[];
      const local = JSON.parse(readFileSync(join(base, 'local.json'), 'utf8')) as {
        targets: Array<{ name: string }>;
      };
      const environment = (name: string, names: string[], extra: Record<string, unknown> = {}) => {
        configs[name] = join(base, `${name}.json`);
        writeFileSync(
          configs[name],
          JSON.stringify({
            ...local,
            ...settings,
            ...extra,
            name,
            targets: local.targets.filter((t) => names.includes(t.name)),
          }),
        );
      };
      environment('all', ['app-1', 'app-2', 'app-3']);
      environment('solo', ['app-3']);
      environment('pair', ['app-1', 'app-2']);
      environment('canary', ['app-1', 'app-2'], { watchSeconds: 12 });

      work = mkdtempSync(join(tmpdir(), 'shipshape-guards-'));
      const build = (version: string, mutate?: (dir: string) => void) => {
        artifacts[version] = testArtifact(work, version, mutate);
      };
      /** Replaces `from` with `to` in a staged file; the patch must apply. */
      const patch = (dir: string, file: string, from: string, to: string) => {
        const path = join(dir, file);
        const text = readFileSync(path, 'utf8');
        assert.ok(text.includes(from), `${file} still has ${from}`);
        writeFileSync(path, text.replace(from, to));
      };
      build('v1.0.0');
      if (part === 'locks') build('v1.0.1');
      // A build whose product listing fails (500, counted by the service's own metrics); /ready,
      // the smoke boot and everything else are fine: only the canary watch can catch it.
      if (part === 'canary')
        build('v2.0.0-bad', (dir) =>
          patch(
            dir,
            'dist/modules/products/products.routes.js',
            'const listing = productsService.productListing(request.query);',
            "throw new Error('v2.0.0-bad: the product listing is broken in this build');",
          ),
        );
      // A build with two new migrations: 004 expands (a table with a column), 005 contracts (drops
      // the column older code would read).
      if (part === 'locks')
        build('v3.0.0-contract', (dir) => {
          writeFileSync(
            join(dir, 'dist/db/migrations/004_deploy_probe.js'),
            "import { sql } from 'kysely';\nexport async function up(db) {\n  await sql`CREATE TABLE deploy_probe (id integer PRIMARY KEY, legacy text)`.execute(db);\n}\n",
          );
          writeFileSync(
            join(dir, `dist/db/migrations/${contract}.js`),
            "import { sql } from 'kysely';\nexport const phase = 'contract';\nexport async function up(db) {\n  await sql`ALTER TABLE deploy_probe DROP COLUMN legacy`.execute(db);\n}\n",
          );
          patch(
            dir,
            'dist/db/migrator.js',
            "import * as m003 from './migrations/003_accounts_and_jobs.js';",
            `import * as m003 from './migrations/003_accounts_and_jobs.js';\nimport * as m004 from './migrations/004_deploy_probe.js';\nimport * as m005 from './migrations/${contract}.js';`,
          );
          patch(
            dir,
            'dist/db/migrator.js',
            "'003_accounts_and_jobs': m003,",
            `'003_accounts_and_jobs': m003,\n    '004_deploy_probe': m004,\n    '${contract}': m005,`,
          );
        });
      // The manifest describes the staged tree, not the builder's code.
      if (part === 'locks')
        assert.deepEqual(artifacts['v3.0.0-contract']?.manifest.contractMigrations, [contract]);
      if (part === 'locks') assert.equal(artifacts['v3.0.0-contract']?.manifest.migrationHead, contract);
      figures.push(`setup (stack up, 3 artifacts): ${((Date.now() - fileStarted) / 1000).toFixed(1)} s`);
    });

    after(async () => {
      figures.push(`whole file: ${((Date.now() - fileStarted) / 1000).toFixed(1)} s`);
      console.log(`deploy guard figures:\n  ${figures.join('\n  ')}`);
      if (stack !== undefined) await stack.release();
      if (work !== '') rmSync(work, { recursive: true, force: true });
    });

    if (part === 'locks')
      test('health-check.sh: a certificate expiring in 5 days fails, one valid for 90 days passes, none is a skip', async () => {
        const started = Date.now();
        const restore: Array<() => void> = [];
        try {
          for (const [t, days] of [
            [targets[1], 5],
            [targets[2], 90],
          ] as Array<[DeployTarget, number]>) {
            const cert = join(t.dir, 'shared', 'tls-cert.pem');
            const key = join(work, `${t.name}.key`);
            selfSignedCertificate({ certPath: cert, keyPath: key, subject: `/CN=${t.name}.test`, days });
            const owner = statSync(t.dir);
            chownSync(cert, owner.uid, owner.gid);
            const envFile = join(t.dir, 'shared', '.env');
            const before = readFileSync(envFile, 'utf8');
            restore.push(() => {
              writeFileSync(envFile, before);
              rmSync(cert, { force: true });
            });
            writeFileSync(envFile, `${before.trimEnd()}\nTLS_CERT_FILE=${cert}\n`);
          }
          const run = await runScript('health-check.sh', [
            '--env',
            'all',
            '--config',
            configs.all as string,
            '--json',
          ]);
          const report = JSON.parse(run.stdout) as {
            checks: Array<{ target: string; check: string; status: string; detail: string }>;
          };
          const failed = report.checks.filter((c) => c.status === 'fail');
          assert.equal(run.code, failed.length, 'the exit code is the number of failed checks');
          const certs = report.checks.filter((c) => c.check === 'certificate');
          assert.deepEqual(
            certs.map((c) => [c.target, c.status]),
            [
              ['app-1', 'skip'],
              ['app-2', 'fail'],
              ['app-3', 'ok'],
            ],
            JSON.stringify(certs),
          );
          assert.match(certs[1]?.detail ?? '', /expires .* \(4 days\)/);
          assert.match(certs[2]?.detail ?? '', /expires .* \(89 days\)/);
          assert.deepEqual(
            failed.map((c) => `${c.target} ${c.check}`),
            ['app-2 certificate'],
            'nothing else fails',
          );
          const text = await runScript('health-check.sh', [
            '--env',
            'all',
            '--config',
            configs.all as string,
          ]);
          assert.equal(text.code, 1, text.stdout);
          assert.match(text.stdout, /FAIL +app-2 +certificate +expires .*\(4 days\)/);
          assert.match(text.stdout, /ok +app-3 +certificate +expires/);
        } finally {
          for (const undo of restore) undo();
        }
        figures.push(`certificate expiry: ${((Date.now() - started) / 1000).toFixed(1)} s`);
      });

    if (part === 'locks')
      test('--lock-wait: a deploy waits for the running one and then proceeds; with a short wait it exits 3', async () => {
        const started = Date.now();
        const v1 = artifacts['v1.0.0'] as Artifact;
        const v101 = artifacts['v1.0.1'] as Artifact;
        const first = watched('deploy.sh', args('solo', v1));
        await waitUntil(() => locked(targets[2] as DeployTarget), {
          timeoutMs: 180_000,
          intervalMs: 50,
          what: 'the first deploy to hold every lock',
        });
        const short = await runScript('deploy.sh', args('solo', v101, '--lock-wait', '2'));
        assert.equal(first.finished(), 0, 'the first deploy still runs (the refusal met its lock)');
        assert.equal(short.code, 3, short.stdout + short.stderr);
        assert.match(short.stderr, /app-3: the deploy lock is held \(owner=.*\); waited 2s/);
        const waiting = watched('deploy.sh', args('solo', v101, '--lock-wait', '600'));
        await waitUntil(() => /app-3: the deploy lock is held .*waiting up to \d+s/.test(waiting.out()), {
          timeoutMs: 120_000,
          what: 'the second deploy to say it waits',
        });
        const waitingSince = Date.now();
        assert.equal(first.finished(), 0, 'it waits while the first deploy runs');
        const [a, b] = await Promise.all([first.done, waiting.done]);
        assert.equal(a.code, 0, a.stdout + a.stderr);
        assert.equal(b.code, 0, b.stdout + b.stderr);
        assert.ok(waiting.finished() > first.finished(), 'the waiting deploy ended after the first');
        assert.deepEqual(targets.map(currentOf), ['', '', v101.manifest.id]);
        const switches = releaseLog(targets[2] as DeployTarget)
          .split('\n')
          .filter((l) => l.includes(' switch '));
        assert.match(switches[0] ?? '', new RegExp(`-> ${v1.manifest.id} `));
        assert.match(switches[1] ?? '', new RegExp(`${v1.manifest.id} -> ${v101.manifest.id} `));
        assert.deepEqual(targets.map(locked), [false, false, false]);
        figures.push(
          `--lock-wait: first deploy (app-3, first release) ${(a.ms / 1000).toFixed(1)} s; --lock-wait 2 exited 3 after ${(short.ms / 1000).toFixed(1)} s; --lock-wait 600 waited ${((first.finished() - waitingSince) / 1000).toFixed(1)} s+ and deployed, ${(b.ms / 1000).toFixed(1)} s in all; test ${((Date.now() - started) / 1000).toFixed(1)} s`,
        );
      });

    if (part === 'locks')
      test('--dry-run prints the plan and changes nothing on any server', async () => {
        const started = Date.now();
        const beforeState = targets.map(state);
        const run = await runScript('deploy.sh', [
          ...args('solo', artifacts['v3.0.0-contract'] as Artifact),
          '--dry-run',
        ]);
        assert.equal(run.code, 0, run.stdout + run.stderr);
        const id = (artifacts['v3.0.0-contract'] as Artifact).manifest.id;
        assert.match(run.stdout, new RegExp(`deploy ${id} \\(v3\\.0\\.0-contract,.*canary app-3`));
        for (const t of used())
          assert.match(
            run.stdout,
            new RegExp(
              `  ${t.name}: current ${currentOf(t)} \\(v1\\.0\\.1\\); would reuse dependencies; unlocked`,
            ),
          );
        assert.match(run.stdout, /dry run: nothing was changed/);
        assert.deepEqual(targets.map(state), beforeState);
        assert.ok(targets.every((t) => !existsSync(join(t.dir, 'releases', id))));
        figures.push(
          `--dry-run: ${(run.ms / 1000).toFixed(1)} s; test ${((Date.now() - started) / 1000).toFixed(1)} s`,
        );
      });

    if (part === 'canary')
      test('v1 on app-1 and app-2', async () => {
        const v1 = artifacts['v1.0.0'] as Artifact;
        const run = await runScript('deploy.sh', args('pair', v1));
        assert.equal(run.code, 0, run.stdout + run.stderr);
        assert.deepEqual(targets.map(currentOf), [v1.manifest.id, v1.manifest.id, '']);
        figures.push(`v1 to app-1 and app-2 (first release): ${(run.ms / 1000).toFixed(1)} s`);
      });

    if (part === 'canary')
      test('monitor-traffic.sh --env: one row per server under load, exit 0; a p95 limit below what is measured → exit 1', async () => {
        const started = Date.now();
        const load = directLoad();
        try {
          await waitUntil(() => used().every((t) => load.count(t.name) >= 30), {
            timeoutMs: 60_000,
            what: 'traffic on every server',
          });
          const run = await runScript('monitor-traffic.sh', [
            '--env',
            'pair',
            '--config',
            configs.pair as string,
            '--seconds',
            '6',
            '--interval',
            '2',
          ]);
          assert.equal(run.code, 0, run.stdout + run.stderr);
          for (const t of used())
            assert.match(
              run.stdout,
              new RegExp(`^${t.name} +[\\d.]+ +\\d+ +0\\.00 % +\\d+ ms +1 \\(ready in every sample\\)$`, 'm'),
            );
          assert.match(run.stdout, /^all +[\d.]+ +\d+ +0\.00 % +\d+ ms +2\/2 servers$/m);
          assert.match(run.stdout, /SLO met on every server/);
          const rps = Number(/^app-1 +([\d.]+)/m.exec(run.stdout)?.[1]);
          assert.ok(rps > 1, `app-1 served ${rps} req/s`);
          const strict = await runScript('monitor-traffic.sh', [
            '--env',
            'pair',
            '--config',
            configs.pair as string,
            '--seconds',
            '3',
            '--interval',
            '1',
            // 0 ms: below any measured p95 (on a quiet machine p95 is 1 ms, so a 1 ms limit held).
            '--max-p95-ms',
            '0',
          ]);
          assert.equal(strict.code, 1, strict.stdout + strict.stderr);
          assert.match(strict.stderr, /SLO breached: app-1: p95 \d+ ms > 0 ms/);
          figures.push(
            `monitor-traffic.sh --env pair --seconds 6: ${(run.ms / 1000).toFixed(1)} s (${rps} req/s on app-1); --seconds 3 --max-p95-ms 0: exit 1 after ${(strict.ms / 1000).toFixed(1)} s`,
          );
        } finally {
          await load.stop();
        }
        const errors = used().map((t) =>
          Object.keys(load.statuses.get(t.name) ?? {}).filter((k) => k !== '200'),
        );
        assert.deepEqual(errors, [[], []], JSON.stringify([...load.statuses]));
        figures.push(`monitor test: ${((Date.now() - started) / 1000).toFixed(1)} s`);
      });

    if (part === 'canary')
      test('a canary that answers 500: the watch rolls it back (exit 1, per-server table), the others never switched; monitor-traffic.sh sees the breach on the canary', async () => {
        const started = Date.now();
        const bad = artifacts['v2.0.0-bad'] as Artifact;
        const old = targets.map(currentOf);
        const others = targets.slice(1, 2);
        const othersBefore = others.map((t) => ({ pids: servingPids(t), log: releaseLog(t) }));
        const load = directLoad();
        let monitor: Run | undefined;
        let run: Run;
        try {
          await waitUntil(() => used().every((t) => load.count(t.name) >= 30), {
            timeoutMs: 60_000,
            what: 'traffic on every server',
          });
          const deploy = watched('deploy.sh', args('canary', bad));
          await waitUntil(() => /app-1: switched, reloaded/.test(deploy.out()) || deploy.finished() > 0, {
            timeoutMs: 300_000,
            what: 'the canary switch',
          });
          monitor = await runScript('monitor-traffic.sh', [
            '--env',
            'pair',
            '--config',
            configs.pair as string,
            '--seconds',
            '4',
            '--interval',
            '1',
          ]);
          run = await deploy.done;
        } finally {
          await load.stop();
        }
        assert.equal(run.code, 1, run.stdout + run.stderr);
        assert.match(run.stderr, /app-1: the canary failed its watch: 5xx ratio [\d.]+ % > 1\.00 %/);
        assert.match(run.stderr, /automatic rollback of app-1 done in ([\d.]+)s/);
        assert.match(run.stdout, /^ {2}app-1 +\S+ \(v1\.0\.0\) +\S+ \(v1\.0\.0\) +rolled back \(\d+ ms\)$/m);
        assert.match(run.stdout, /^ {2}app-2 +\S+ \(v1\.0\.0\) +\S+ \(v1\.0\.0\) +untouched$/m);
        assert.doesNotMatch(run.stdout, /app-2: switched/);
        assert.deepEqual(targets.map(currentOf), old);
        // Installed beside the old release (the deploy ships everywhere first), never switched to:
        // the same PM2 daemon and worker, and no switch in the release log.
        assert.deepEqual(
          others.map((t) => servingPids(t)),
          othersBefore.map((o) => o.pids),
        );
        for (const [i, t] of others.entries())
          assert.deepEqual(
            releaseLog(t)
              .slice(othersBefore[i]?.log.length)
              .split('\n')
              .filter(Boolean)
              .map((l) => l.split(' ')[1]),
            ['install'],
            `${t.name}: installed only`,
          );
        const seen = (name: string) => load.statuses.get(name) ?? {};
        assert.ok((seen('app-1')['500'] ?? 0) > 0, `app-1 answered 500s: ${JSON.stringify(seen('app-1'))}`);
        for (const t of others)
          assert.deepEqual(Object.keys(seen(t.name)), ['200'], `${t.name} served only 200s`);
        // monitor-traffic.sh ran while the canary served: the breach is the canary's alone.
        assert.ok(monitor !== undefined);
        assert.equal(monitor.code, 1, monitor.stdout + monitor.stderr);
        assert.match(monitor.stderr, /SLO breached: app-1: 5xx ratio [\d.]+ % > 1\.00 %/);
        assert.doesNotMatch(monitor.stderr, /app-2:/);
        assert.match(monitor.stdout, /^app-2 +[\d.]+ +\d+ +0\.00 %/m);
        figures.push(
          `bad canary: exit 1 after ${(run.ms / 1000).toFixed(1)} s; ${/automatic rollback of [^\n]*/.exec(run.stderr)?.[0]}; ${/app-1: canary \d+ requests[^\n]*/.exec(run.stdout)?.[0]}; monitor row ${/^app-1 [^\n]*/m.exec(monitor.stdout)?.[0]}; direct load ${JSON.stringify(Object.fromEntries(load.statuses))}; test ${((Date.now() - started) / 1000).toFixed(1)} s`,
        );
      });

    if (part === 'locks')
      test('rollback across an applied contract migration: refused with exit 5 and the reason, nothing changed', async () => {
        const started = Date.now();
        const v3 = artifacts['v3.0.0-contract'] as Artifact;
        const app3 = targets[2] as DeployTarget;
        const deployed = await runScript('deploy.sh', args('solo', v3));
        assert.equal(deployed.code, 0, deployed.stdout + deployed.stderr);
        assert.equal(currentOf(app3), v3.manifest.id);
        const client = new pg.Client({ connectionString: databaseUrl });
        await client.connect();
        const columns = async () =>
          (
            await client.query<{ column_name: string }>(
              "SELECT column_name FROM information_schema.columns WHERE table_name = 'deploy_probe' ORDER BY column_name",
            )
          ).rows.map((r) => r.column_name);
        try {
          // The deploy expanded (004) and deferred the contract: the releases retained on app-3 lack it.
          assert.deepEqual(await columns(), ['id', 'legacy']);
          // The operator contracts by hand once they judge the old releases unneeded — as the target
          // user, from the current release, with the service's environment.
          const migrated = spawnSync(
            'runuser',
            [
              '-u',
              app3.user,
              '--',
              'bash',
              '-c',
              // biome-ignore lint/suspicious/noTemplateCurlyInString: a shell parameter expansion
              'cd "$1" && set -a && . shared/.env && set +a && cd current && exec "${NODE_BIN:-$2}" dist/cli/migrate-production.js --allow-contract "$3"',
              '_',
              app3.dir,
              process.execPath,
              contract,
            ],
            { encoding: 'utf8', timeout: 120_000 },
          );
          assert.equal(migrated.status, 0, migrated.stdout + migrated.stderr);
          assert.match(migrated.stdout, new RegExp(`applied ${contract}; head ${contract}`));
          assert.deepEqual(await columns(), ['id']);
        } finally {
          await client.end();
        }
        const beforeState = state(app3);
        const run = await runScript('rollback.sh', [
          '--env',
          'solo',
          '--config',
          configs.solo as string,
          '--to=v1.0.1',
        ]);
        assert.equal(run.code, 5, run.stdout + run.stderr);
        assert.match(
          run.stderr,
          new RegExp(
            `refused: v1\\.0\\.1 predates contract migration\\(s\\) ${contract} already applied \\(the database head is ${contract}\\); it would read columns or tables that are gone\\. Roll forward with a fix instead, or --force to switch anyway; nothing was changed`,
          ),
        );
        assert.deepEqual(state(app3), beforeState);
        figures.push(
          `contract: deploy of v3 to app-3 ${(deployed.ms / 1000).toFixed(1)} s; refused rollback (exit 5) after ${(run.ms / 1000).toFixed(1)} s; test ${((Date.now() - started) / 1000).toFixed(1)} s`,
        );
      });
  });
}
