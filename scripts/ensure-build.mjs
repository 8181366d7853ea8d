#!/usr/bin/env node
// Builds dist/ when it is missing or older than the sources, so `npm ci && npm start` works on a
// fresh clone and `npm start` after an edit runs the edit. A production install without dev
// dependencies (no TypeScript) runs the dist/ it was shipped with.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const stamp = join(root, 'dist', '.build-stamp');

function newestMtime(path) {
  const stat = statSync(path);
  if (!stat.isDirectory()) return stat.mtimeMs;
  let newest = stat.mtimeMs;
  for (const entry of readdirSync(path)) newest = Math.max(newest, newestMtime(join(path, entry)));
  return newest;
}

const inputs = ['src', 'tsconfig.json', 'tsconfig.build.json', 'package.json'].map((p) => join(root, p));
const sourcesChanged = newestMtime(inputs[0]);
const newestInput = Math.max(sourcesChanged, ...inputs.slice(1).map((p) => statSync(p).mtimeMs));
const built = existsSync(stamp) ? statSync(stamp).mtimeMs : 0;
if (built >= newestInput) process.exit(0);

let tsc;
try {
  // The bin path, read from the package manifest (TypeScript 7 does not export ./bin/tsc).
  const manifest = createRequire(import.meta.url).resolve('typescript/package.json');
  tsc = join(dirname(manifest), 'bin', 'tsc');
} catch {
  if (built > 0) {
    console.warn(
      'ensure-build: sources are newer than dist/, but TypeScript is not installed; using dist/ as shipped.',
    );
    process.exit(0);
  }
  console.error(
    'ensure-build: dist/ is missing and TypeScript is not installed. Run `npm ci` (with dev dependencies) first.',
  );
  process.exit(1);
}

// One compile at a time: test files start in parallel, and a command reading dist/ while another
// process rewrites it would load a half-written file. The lock is a directory (mkdir is atomic);
// one older than two minutes belongs to a compile that died.
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
  // Someone else may have compiled while we waited.
  if (!existsSync(stamp) || statSync(stamp).mtimeMs < newestInput) {
    console.error('ensure-build: compiling TypeScript to dist/ ...');
    const result = spawnSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json')], {
      stdio: 'inherit',
    });
    if (result.status !== 0) process.exitCode = result.status ?? 1;
    else writeFileSync(stamp, `${new Date().toISOString()}\n`);
  }
} finally {
  rmSync(lock, { recursive: true, force: true });
}
