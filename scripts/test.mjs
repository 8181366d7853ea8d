#!/usr/bin/env node
// Runs the whole suite with node's own test runner (TypeScript through tsx): unit, component and
// integration tests. Arguments narrow it: `npm test -- test/config.test.ts`, or any node --test flag.
// The closing summary prints the pass, fail and skip counts.
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';

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
const targets = files.length > 0 ? files : findTests(join(root, 'test')).sort();

// Test files that share a `npm run stack` stage (test/support/stack.ts sharedStack) bring it up
// lazily in this directory; every one of them is taken down here, after the last file.
const sharedStacks = mkdtempSync(join(tmpdir(), 'shipshape-shared-stacks-'));
// nginx's workers (nobody, when the stacks run as root) must reach their webroot and temp dirs.
chmodSync(sharedStacks, 0o755);

const result = spawnSync(
  process.execPath,
  [
    '--import',
    'tsx',
    '--test',
    '--test-reporter=spec',
    `--test-concurrency=${process.env.TEST_CONCURRENCY ?? 3}`,
    // Generous: a test that waits for a condition must not be failed by a busy machine (CI shares two cores).
    '--test-timeout=600000',
    ...flags,
    ...targets,
  ],
  {
    stdio: 'inherit',
    cwd: root,
    env: { ...process.env, NODE_ENV: 'test', SHIPSHAPE_SHARED_STACKS: sharedStacks },
  },
);

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
process.exit(teardownFailed ? 1 : (result.status ?? 1));
