#!/usr/bin/env node
/**
 * `npm run bench:tracing` — what OpenTelemetry costs on the hot path when it is off: GET
 * /api/products/:id (warm, SQLite, in-process cache) against
 *   A. tracing not installed: this commit with the tracing commit reverted (built in a temporary
 *      clone; `--baseline DIR` uses an already built checkout instead), and
 *   B. tracing installed but off (TRACING_ENABLED=false, the default), this checkout;
 *   (C. with `--on`: TRACING_ENABLED=true, spans made and sampled, no exporter;
 *    D. with `--on --sample P` too: the same with TRACING_SAMPLE_PERCENT=P.)
 * `--without-baseline` leaves A out (with `--on`: C against B, what turning tracing on costs): the
 * revert that makes A conflicts once later commits change the same lines, and then A cannot be built.
 * Rounds interleave the targets and alternate their order (A B, B A, …) so the drift of a shared
 * machine hits each alike. Per target and round: requests per second and the server process's CPU
 * time per request (user + system from /proc/<pid>/stat over the measured window). Printed: medians,
 * and the per-round ratios B/A as a median with their range.
 *
 * CPU time per request is the robust figure on a shared, noisy machine: throughput moves with
 * whatever else runs on the cores, while the CPU a request costs the server process hardly does.
 *
 *   npm run bench:tracing -- [--rounds 5] [--duration 5] [--on] [--baseline DIR | --without-baseline] [--sample P] [--json FILE]
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { freePort } from '../test/harness/ports.js';
import { runLoad } from './lib/load.js';
import { startServer } from './lib/processes.js';

const run = promisify(execFile);
const root = new URL('..', import.meta.url).pathname;
/** The commit that added tracing (decision 0063): reverted to make "not installed". */
const tracingCommit = '0f2d4de';
const { values: flags } = parseArgs({
  options: {
    duration: { type: 'string', default: '5' },
    rounds: { type: 'string', default: '5' },
    connections: { type: 'string', default: '20' },
    baseline: { type: 'string' },
    on: { type: 'boolean', default: false },
    'without-baseline': { type: 'boolean', default: false },
    sample: { type: 'string' },
    json: { type: 'string' },
  },
});
const duration = Number(flags.duration);
const rounds = Number(flags.rounds);
const connections = Number(flags.connections);
if (!(rounds >= 3)) throw new Error('--rounds must be at least 3');
const serverCore = 0;
const loadCore = availableParallelism() > 1 ? 1 : undefined;
// Clock ticks per second of /proc/<pid>/stat's utime and stime (USER_HZ: 100 on Linux).
const clockTicks = Number((await run('getconf', ['CLK_TCK'])).stdout.trim()) || 100;

interface Target {
  readonly name: string;
  readonly dir: string;
  readonly env: Record<string, string>;
}

interface Sample {
  readonly rps: number;
  readonly p99Ms: number;
  /** Server CPU (user + system) per request, microseconds. */
  readonly cpuUsPerRequest: number;
}

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[mid] ?? 0) : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
};

/** user + system CPU of a process so far, in seconds (Linux /proc). */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces) start at field 3: utime is 14, stime 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / clockTicks;
}

/** This commit with the tracing commit reverted, built: the service as if tracing was never added. */
async function buildWithoutTracing(dir: string): Promise<string> {
  const head = (await run('git', ['-C', root, 'rev-parse', 'HEAD'])).stdout.trim();
  const checkout = join(dir, 'without-tracing');
  await run('git', ['clone', '--quiet', '--shared', '--no-checkout', root, checkout]);
  await run('git', ['-C', checkout, 'checkout', '--quiet', '--detach', head]);
  // Only src/ is reverted: everything else (package.json, README, tests) stays as at HEAD, where
  // later commits may make the revert conflict.
  await run('git', ['-C', checkout, 'revert', '--no-commit', tracingCommit]).catch(() => undefined);
  await run('git', ['-C', checkout, 'checkout', 'HEAD', '--', '.', ':(exclude)src']);
  if (existsSync(join(checkout, 'src', 'infra', 'tracing.ts')))
    throw new Error(`reverting ${tracingCommit} left src/infra/tracing.ts: the revert failed`);
  const { stdout } = await run('git', ['-C', checkout, 'diff', '--name-only', '--diff-filter=U']);
  const conflicted = stdout.split('\n').filter((f) => f.startsWith('src/'));
  if (conflicted.length > 0)
    throw new Error(
      `reverting ${tracingCommit} conflicts in ${conflicted.join(', ')} (later commits changed those lines): ` +
        'pass --baseline DIR (a built checkout without tracing), or --without-baseline --on to measure tracing on against off',
    );
  symlinkSync(join(root, 'node_modules'), join(checkout, 'node_modules'));
  // The same storefront files, so both serve the same routes (without public/ no static route exists).
  if (existsSync(join(root, 'public'))) symlinkSync(join(root, 'public'), join(checkout, 'public'));
  await run(
    process.execPath,
    [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(checkout, 'tsconfig.build.json')],
    { cwd: checkout },
  );
  return checkout;
}

async function measure(target: Target, dir: string, label: string): Promise<Sample> {
  const sqlite = join(dir, `${label}.db`);
  const env = {
    NODE_ENV: 'production',
    LOG_LEVEL: 'warn',
    SQLITE_PATH: sqlite,
    DATABASE_MIGRATE_ON_START: 'true',
    JWT_SECRET: 'bench-secret-bench-secret-bench-secret-0123456789',
    RATE_LIMIT_MAX: '1000000000',
    CACHE_WARM_UP_PAGES: '0',
    ...target.env,
  };
  await run(process.execPath, [join(target.dir, 'dist', 'cli', 'migrate.js')], {
    cwd: target.dir,
    env: { ...process.env, ...env },
  });
  await run(process.execPath, [join(target.dir, 'dist', 'cli', 'seed.js')], {
    cwd: target.dir,
    env: { ...process.env, ...env },
  });
  const port = await freePort();
  const server = await startServer({
    name: target.name,
    port,
    command: process.execPath,
    args: [join(target.dir, 'dist', 'main.js')],
    env,
    core: serverCore,
    logFile: join(dir, 'server.log'),
  });
  try {
    const pid = server.child.pid;
    if (pid === undefined) throw new Error(`${target.name}: no pid`);
    const list = (await (await fetch(`http://127.0.0.1:${port}/api/products?limit=1`)).json()) as {
      items: Array<{ id: string }>;
    };
    const paths = [`/api/products/${list.items[0]?.id}`];
    await runLoad({ port, paths, connections, durationSeconds: 1, core: loadCore });
    const cpuBefore = cpuSeconds(pid);
    const result = await runLoad({ port, paths, connections, durationSeconds: duration, core: loadCore });
    const cpu = cpuSeconds(pid) - cpuBefore;
    if (result.errors > 0 || result.non2xx > 0 || result.requests === 0)
      throw new Error(
        `${target.name}: ${result.requests} requests, ${result.errors} errors, ${result.non2xx} non-2xx`,
      );
    return { rps: result.rps, p99Ms: result.p99Ms, cpuUsPerRequest: (cpu / result.requests) * 1e6 };
  } finally {
    await server.stop();
  }
}

const ratioSummary = (ratios: number[]) =>
  `${(median(ratios) * 100).toFixed(1)} % (range ${(Math.min(...ratios) * 100).toFixed(1)}–${(Math.max(...ratios) * 100).toFixed(1)} %)`;

async function main(): Promise<void> {
  await run(process.execPath, [join(root, 'scripts', 'ensure-build.mjs')], { cwd: root });
  const dir = mkdtempSync(join(tmpdir(), 'shipshape-bench-tracing-'));
  try {
    const withoutBaseline = flags['without-baseline'];
    if (withoutBaseline && !flags.on)
      throw new Error('--without-baseline needs --on (else nothing is compared)');
    const baselineDir = withoutBaseline ? '' : (flags.baseline ?? (await buildWithoutTracing(dir)));
    const notInstalled: Target = { name: 'tracing not installed', dir: baselineDir, env: {} };
    const off: Target = {
      name: 'installed, TRACING_ENABLED=false',
      dir: root,
      env: { TRACING_ENABLED: 'false' },
    };
    const on: Target = {
      name: 'TRACING_ENABLED=true (no exporter)',
      dir: root,
      env: { TRACING_ENABLED: 'true' },
    };
    const sampled: Target[] =
      flags.on && flags.sample !== undefined
        ? [
            {
              name: `TRACING_ENABLED=true, TRACING_SAMPLE_PERCENT=${flags.sample}`,
              dir: root,
              env: { TRACING_ENABLED: 'true', TRACING_SAMPLE_PERCENT: flags.sample },
            },
          ]
        : [];
    const targets = [...(withoutBaseline ? [] : [notInstalled]), off, ...(flags.on ? [on, ...sampled] : [])];
    // Ratios are against the first target: not installed, or off with --without-baseline.
    const [reference] = targets as [Target, ...Target[]];
    const samples = new Map<string, Sample[]>(targets.map((t) => [t.name, []]));
    for (let round = 0; round < rounds; round++) {
      const order = round % 2 === 0 ? targets : [...targets].reverse();
      for (const target of order) {
        const sample = await measure(target, dir, `${round}-${targets.indexOf(target)}`);
        samples.get(target.name)?.push(sample);
        console.log(
          `round ${round + 1} ${target.name}: ${sample.rps.toFixed(0)} req/s, ${sample.cpuUsPerRequest.toFixed(1)} µs CPU/request, p99 ${sample.p99Ms.toFixed(2)} ms`,
        );
      }
    }
    const base = samples.get(reference.name) ?? [];
    console.log(
      `\n${rounds} rounds × ${duration} s, ${connections} connections, GET /api/products/:id (SQLite, warm); medians:`,
    );
    const summary: Record<string, unknown> = {
      date: new Date().toISOString(),
      rounds,
      durationSeconds: duration,
      connections,
    };
    for (const target of targets) {
      const s = samples.get(target.name) ?? [];
      const rpsRatios = s.map((x, i) => x.rps / (base[i]?.rps ?? Number.NaN));
      const cpuRatios = s.map((x, i) => x.cpuUsPerRequest / (base[i]?.cpuUsPerRequest ?? Number.NaN));
      const vs =
        target === reference
          ? ''
          : `; vs ${reference.name}: throughput ${ratioSummary(rpsRatios)}, CPU/request ${ratioSummary(cpuRatios)}`;
      console.log(
        `  ${target.name}: ${median(s.map((x) => x.rps)).toFixed(0)} req/s, ${median(s.map((x) => x.cpuUsPerRequest)).toFixed(1)} µs CPU/request, p99 ${median(s.map((x) => x.p99Ms)).toFixed(2)} ms${vs}`,
      );
      summary[target.name] = { samples: s, rpsRatios, cpuRatios };
    }
    console.log(
      '\nCPU time per request is the robust figure on a shared machine; throughput follows the load of the other processes.',
    );
    if (flags.json !== undefined) writeFileSync(flags.json, `${JSON.stringify(summary, null, 2)}\n`);
  } finally {
    // A server that is still stopping may write its database meanwhile: retry, and never mask the
    // benchmark's own error.
    try {
      rmSync(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 });
    } catch (err) {
      console.error(`could not remove ${dir}: ${(err as Error).message}`);
    }
  }
}

await main();
