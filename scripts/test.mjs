#!/usr/bin/env node
// Runs the whole suite with node's own test runner (TypeScript through tsx): unit, component and
// integration tests. Arguments narrow it: `npm test -- test/config.test.ts`, or any node --test flag.
// The closing summary prints the pass, fail and skip counts. Afterwards it checks that the run
// left nothing behind on the machine (scripts/test-leaks.mjs): no process, no temp entry, no Redis
// key of the run; a leak is reported, removed, and fails the run. SHIPSHAPE_TEST_LEAK_CHECK=0 turns
// the check off (for a run that is meant to leave something to inspect).
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { cleanUp, describeLeaks, findLeaks, startRun } from './test-leaks.mjs';

const root = new URL('..', import.meta.url).pathname;

function findTests(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return findTests(path);
    return entry.name.endsWith('.test.ts') ? [relative(root, path)] : [];
  });
}

const args = process.argv.slice(2);
const files = args.filter((a) => !a.startsWith('-'));
const flags = args.filter((a) => a.startsWith('-'));
// The files that take minutes start first (longest first, from CI with both cores hogged on
// 2026-12-07: the growth stack 425 s, the launch sequence 310 s each, the container build 67 s warm
// and 407 s on a machine without the base image): scripts/test-files.mjs starts files in the order
// given, and the run must not end with one long file alone while the other slots sit idle.
// Ordering only; every file runs either way, and a name here that no longer exists fails the run
// so the list stays true.
const longestFirst = [
  'test/stack/growth.test.ts',
  'test/ops/container.test.ts',
  'test/ops/deploy-launch.test.ts',
  'test/ops/deploy-rollback.test.ts',
  'test/ops/deploy-canary.test.ts',
  'test/chaos/chaos.test.ts',
  'test/pm2/cluster.test.ts',
  'test/ops/deploy-guards.test.ts',
  'test/ops/monitoring-live.test.ts',
  'test/stack/autoscale.test.ts',
  'test/ops/prometheus-rules.test.ts',
  'test/db/replicas.test.ts',
  'test/bench.test.ts',
];
function allTests() {
  const found = findTests(join(root, 'test')).sort();
  const missing = longestFirst.filter((file) => !found.includes(file));
  if (missing.length > 0) {
    console.error(`test.mjs: longestFirst names files that do not exist: ${missing.join(', ')}`);
    process.exit(2);
  }
  return [...longestFirst, ...found.filter((file) => !longestFirst.includes(file))];
}
const targets = files.length > 0 ? files : allTests();

// Test files that share a `npm run stack` stage (test/support/stack.ts sharedStack) bring it up
// lazily in this directory; every one of them is taken down here, after the last file.
const sharedStacks = mkdtempSync(join(tmpdir(), 'shipshape-shared-stacks-'));
// The run's own temp directory, id and Redis key prefix, handed to every test process.
const run = startRun();
// nginx's workers (nobody, when the stacks run as root) must reach their webroot and temp dirs.
chmodSync(sharedStacks, 0o755);

// Generous: a test that waits for a condition must not be failed by a busy machine (CI shares two
// cores). Node 20 applies it to each test file as a whole: the launch-sequence files take about
// 5 minutes on a quiet machine and over 10 with both cores hogged, and the container file builds
// its base image on a machine that has none (5 minutes of debootstrap under load).
const testTimeoutMs = 1_200_000;
const concurrency = process.env.TEST_CONCURRENCY ?? '3';
// The full run goes through scripts/test-files.mjs (node's run() API keeps the longest-first order;
// `node --test` sorts its files by name); a narrowed run takes `node --test` and any of its flags.
const runnerArgs =
  args.length === 0
    ? ['scripts/test-files.mjs', ...targets]
    : [
        '--test',
        '--test-reporter=spec',
        `--test-concurrency=${concurrency}`,
        `--test-timeout=${testTimeoutMs}`,
        ...flags,
        ...targets,
      ];
const result = spawnSync(process.execPath, ['--import', 'tsx', ...runnerArgs], {
  stdio: 'inherit',
  cwd: root,
  env: {
    ...process.env,
    ...run.env,
    NODE_ENV: 'test',
    SHIPSHAPE_SHARED_STACKS: sharedStacks,
    TEST_CONCURRENCY: concurrency,
    TEST_TIMEOUT_MS: String(testTimeoutMs),
  },
});

let teardownFailed = false;
for (const entry of readdirSync(sharedStacks)) {
  const stateDir = join(sharedStacks, entry);
  if (!existsSync(join(stateDir, 'state.json'))) continue;
  console.log(`test.mjs: taking down the shared stack ${entry}`);
  const down = spawnSync(
    process.execPath,
    ['--import', 'tsx', 'stack/cli.ts', 'down', '--state-dir', stateDir],
    {
      stdio: 'inherit',
      cwd: root,
    },
  );
  if (down.status !== 0) teardownFailed = true;
}
rmSync(sharedStacks, { recursive: true, force: true });

let leaked = false;
if (process.env.SHIPSHAPE_TEST_LEAK_CHECK !== '0') {
  const redisUrl = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
  const graceMs = Number(process.env.SHIPSHAPE_TEST_LEAK_GRACE_MS ?? 15_000);
  const leaks = await findLeaks(run, { redisUrl, graceMs });
  const lines = describeLeaks(leaks);
  if (lines.length > 0) {
    leaked = true;
    console.log(
      `\ntest.mjs: the run left ${lines.length} thing(s) behind (removed now; a test must clean up after itself):`,
    );
    for (const line of lines) console.log(`  ${line}`);
  }
  await cleanUp(run, leaks, { redisUrl });
} else {
  rmSync(run.dir, { recursive: true, force: true });
}
process.exit(teardownFailed || leaked ? 1 : (result.status ?? 1));
