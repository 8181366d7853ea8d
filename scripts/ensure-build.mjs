#!/usr/bin/env node
// Builds what is missing or older than its sources, so `npm ci && npm start` works on a fresh
// clone and `npm start` after an edit runs the edit:
// - dist/ from src/ (TypeScript);
// - public/ from web/ (the storefront, with Vite; web/ imports the typed client in client/).
// A production install without dev dependencies (no TypeScript, no Vite) runs the dist/ and
// public/ it was shipped with.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const require = createRequire(import.meta.url);

function newestMtime(path) {
  if (!existsSync(path)) return 0;
  const stat = statSync(path);
  if (!stat.isDirectory()) return stat.mtimeMs;
  let newest = stat.mtimeMs;
  for (const entry of readdirSync(path)) newest = Math.max(newest, newestMtime(join(path, entry)));
  return newest;
}

function stampTime(stamp) {
  return existsSync(stamp) ? statSync(stamp).mtimeMs : 0;
}

/** The bin of an installed package, from its manifest; undefined when it is not installed. */
function binOf(pkg, bin) {
  try {
    return join(dirname(require.resolve(`${pkg}/package.json`)), bin);
  } catch {
    return undefined;
  }
}

const steps = [
  {
    name: 'dist/ (TypeScript)',
    stamp: join(root, 'dist', '.build-stamp'),
    inputs: ['src', 'tsconfig.json', 'tsconfig.build.json', 'package.json'],
    // The bin path, read from the package manifest (TypeScript 7 does not export ./bin/tsc).
    bin: () => binOf('typescript', join('bin', 'tsc')),
    args: ['-p', join(root, 'tsconfig.build.json')],
  },
  {
    name: 'public/ (storefront, Vite)',
    stamp: join(root, 'dist', '.web-build-stamp'),
    inputs: ['web', 'client', 'vite.config.ts', 'package.json'],
    bin: () => binOf('vite', join('bin', 'vite.js')),
    args: ['build', '--config', join(root, 'vite.config.ts')],
    // Without web/ (a shipped artifact) there is nothing to build.
    applies: () => existsSync(join(root, 'web')),
  },
];

const stale = steps.filter(
  (step) =>
    (step.applies?.() ?? true) &&
    stampTime(step.stamp) < Math.max(...step.inputs.map((p) => newestMtime(join(root, p)))),
);
if (stale.length === 0) process.exit(0);

// One build at a time: test files start in parallel, and a command reading dist/ while another
// process rewrites it would load a half-written file. The lock is a directory (mkdir is atomic);
// one older than two minutes belongs to a build that died.
const lock = join(root, 'dist', '.build-lock');
mkdirSync(join(root, 'dist'), { recursive: true });
for (;;) {
  try {
    mkdirSync(lock);
    break;
  } catch {
    try {
      if (Date.now() - statSync(lock).mtimeMs > 120_000) rmSync(lock, { recursive: true, force: true });
    } catch {
      // released meanwhile
    }
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 200);
  }
}
try {
  for (const step of stale) {
    const newestInput = Math.max(...step.inputs.map((p) => newestMtime(join(root, p))));
    // Someone else may have built while we waited.
    if (stampTime(step.stamp) >= newestInput) continue;
    const bin = step.bin();
    if (bin === undefined) {
      if (stampTime(step.stamp) > 0) {
        console.warn(
          `ensure-build: sources are newer than ${step.name}, but its build tool is not installed; using it as shipped.`,
        );
        continue;
      }
      console.error(
        `ensure-build: ${step.name} is missing and its build tool is not installed. Run \`npm ci\` (with dev dependencies) first.`,
      );
      process.exitCode = 1;
      break;
    }
    console.error(`ensure-build: building ${step.name} ...`);
    const result = spawnSync(process.execPath, [bin, ...step.args], { stdio: 'inherit', cwd: root });
    if (result.status !== 0) {
      process.exitCode = result.status ?? 1;
      break;
    }
    writeFileSync(step.stamp, `${new Date().toISOString()}\n`);
  }
} finally {
  rmSync(lock, { recursive: true, force: true });
}
