#!/usr/bin/env node
/**
 * `npm run bench:cache-tier` — GET /api/products/:id at the scale stage (Redis cache and rate
 * limits), before and after the local tier (decisions 0104, 0105), on this machine, interleaved.
 *
 *   npm run bench:cache-tier                          3 rounds of 10 s each way, 50 connections
 *   npm run bench:cache-tier -- --rounds 5 --duration 15 --connections 100
 *   npm run bench:cache-tier -- --smoke               1 s rounds (checks the script runs)
 *
 * Two servers are up for the whole run, both on one SQLite file with the demo catalog, both on
 * Redis (BENCH_REDIS_URL, default the local 6379, under a key prefix of their own):
 *   A "before": CACHE_LOCAL_TIER=false, RATE_LIMIT_LOCAL_PERCENT=0 — every request makes two Redis
 *     round trips (the rate-limit counter, the cache entry);
 *   B "after": the defaults — hits from the local tier, counters sent in batches.
 * Rounds alternate A, B, A, B …; each round's ratio B/A is computed from the pair, and the run
 * reports the median ratio with its range (flagged when rounds disagree by more than 20 %), beside
 * each server's CPU time per request from /proc (user + system over the window) and Redis' own CPU
 * per request (INFO; a shared server, so it includes its other clients). Servers are pinned to
 * core 0 and the load generator to core 1 when `taskset` exists. Results: bench/results/cache-tier-*.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { freePort } from '../test/harness/ports.js';
import { cpuSeconds, hasProc } from './lib/cpu.js';
import { type LoadResult, runLoad } from './lib/load.js';
import { type Server, startServer } from './lib/processes.js';
import { formatRatio, median, type RatioSummary, summarizeRatios } from './lib/rounds.js';

const root = new URL('..', import.meta.url).pathname;
const { values: flags } = parseArgs({
  options: {
    smoke: { type: 'boolean', default: false },
    rounds: { type: 'string' },
    duration: { type: 'string' },
    connections: { type: 'string' },
    out: { type: 'string' },
  },
});
const smoke = flags.smoke ?? false;
const rounds = Math.max(smoke ? 1 : 3, Number(flags.rounds ?? 3));
const duration = Number(flags.duration ?? (smoke ? 1 : 10));
const connections = Number(flags.connections ?? (smoke ? 10 : 50));
const margin = 0.2;
const serverCore = 0;
const loadCore = availableParallelism() > 1 ? 1 : undefined;
const redisUrl = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
const keyPrefix = `${process.env.REDIS_KEY_PREFIX ?? ''}bench-cache-tier:${process.pid}:`;

const log = (message: string) => process.stderr.write(`bench:cache-tier: ${message}\n`);

interface Variant {
  readonly name: 'before' | 'after' | 'in-process';
  readonly label: string;
  readonly env: Record<string, string>;
}

const variants: readonly Variant[] = [
  {
    name: 'before',
    label: 'Redis cache and limits, a round trip each (CACHE_LOCAL_TIER=false, RATE_LIMIT_LOCAL_PERCENT=0)',
    env: { CACHE_LOCAL_TIER: 'false', RATE_LIMIT_LOCAL_PERCENT: '0' },
  },
  {
    name: 'after',
    label: 'local tier (CLIENT TRACKING) and batched limits (the defaults)',
    env: { CACHE_LOCAL_TIER: 'true', RATE_LIMIT_LOCAL_PERCENT: '1' },
  },
  // The reference the goal is stated against (≥ 0.9 × the in-process figure): no Redis.
  { name: 'in-process', label: 'in-process cache and limits, no Redis (reference)', env: {} },
];

interface Window {
  readonly load: LoadResult;
  /** Server CPU (user + system) per answered request, µs. */
  readonly serverCpuUs: number;
  /** Redis CPU per answered request, µs (the whole server: other clients included). */
  readonly redisCpuUs: number;
}

async function redisCpuSeconds(admin: Redis): Promise<number> {
  const info = await admin.info('cpu');
  const read = (name: string) => Number(new RegExp(`${name}:([0-9.]+)`).exec(info)?.[1] ?? 0);
  return read('used_cpu_user') + read('used_cpu_sys');
}

async function measure(server: Server, admin: Redis, paths: string[], seconds: number): Promise<Window> {
  const pid = server.child.pid as number;
  const cpu0 = cpuSeconds([pid]);
  const redis0 = await redisCpuSeconds(admin);
  const load = await runLoad({
    port: server.port,
    paths,
    connections,
    durationSeconds: seconds,
    ...(loadCore === undefined ? {} : { core: loadCore }),
  });
  const cpu1 = cpuSeconds([pid]);
  const redis1 = await redisCpuSeconds(admin);
  const answered = Math.max(1, load.requests - load.errors);
  return {
    load,
    serverCpuUs: ((cpu1 - cpu0) * 1e6) / answered,
    redisCpuUs: ((redis1 - redis0) * 1e6) / answered,
  };
}

function variantEnv(base: Record<string, string>, variant: Variant): Record<string, string> {
  const env: Record<string, string> = {
    ...base,
    ...variant.env,
    REDIS_KEY_PREFIX: `${keyPrefix}${variant.name}:`,
  };
  if (variant.name === 'in-process') {
    delete env.REDIS_URL;
    delete env.REDIS_KEY_PREFIX;
  }
  return env;
}

async function main(): Promise<void> {
  execFileSync(process.execPath, [join(root, 'scripts', 'ensure-build.mjs')], { stdio: 'inherit' });
  const workDir = mkdtempSync(join(tmpdir(), 'shipshape-bench-cache-tier-'));
  const admin = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
  const servers: Server[] = [];
  try {
    const sqlitePath = join(workDir, 'bench.db');
    const base = {
      NODE_ENV: 'production',
      JWT_SECRET: 'bench-cache-tier-secret-not-for-production-0123456789',
      LOG_LEVEL: 'info',
      CORS_ORIGINS: 'https://shop.example.com',
      // The limiter runs on every request; its limit is out of reach so the run measures answers.
      RATE_LIMIT_MAX: '1000000000',
      SHUTDOWN_GRACE_MS: '0',
      DATABASE_MIGRATE_ON_START: 'true',
      SQLITE_PATH: sqlitePath,
      REDIS_URL: redisUrl,
      // The start-up cache warm-up job reads pages over HTTP: not wanted in a measured window.
      JOBS_IN_PROCESS: 'false',
    };
    execFileSync(process.execPath, [join(root, 'dist', 'cli', 'seed.js')], {
      env: { ...process.env, ...base },
      stdio: 'ignore',
    });
    for (const variant of variants) {
      servers.push(
        await startServer({
          name: variant.name,
          port: await freePort(),
          command: process.execPath,
          args: [join(root, 'dist', 'main.js')],
          env: variantEnv(base, variant),
          core: serverCore,
          logFile: join(workDir, `${variant.name}.log`),
          readyPath: '/ready',
        }),
      );
    }
    const first = servers[0] as Server;
    const listing = (await (await fetch(`http://127.0.0.1:${first.port}/api/products?limit=100`)).json()) as {
      items: Array<{ id: string }>;
    };
    const paths = listing.items.map((p) => `/api/products/${p.id}`);
    if (paths.length === 0) throw new Error('no products: the seed did not run');
    log(`${paths.length} products; ${rounds} rounds of ${duration} s each way, ${connections} connections`);
    // Warm-up: caches filled (and copied into the local tier), JIT warm.
    for (const server of servers) await measure(server, admin, paths, smoke ? 1 : 3);

    const windows: Record<Variant['name'], Window[]> = { before: [], after: [], 'in-process': [] };
    for (let round = 0; round < rounds; round++) {
      // Rotate which goes first, so none always follows another's heat.
      const order = [0, 1, 2].map((k) => (k + round) % 3);
      for (const i of order) {
        const variant = variants[i] as Variant;
        const window = await measure(servers[i] as Server, admin, paths, duration);
        windows[variant.name].push(window);
        log(
          `round ${round + 1} ${variant.name}: ${window.load.rps.toFixed(0)} req/s, p99 ${window.load.p99Ms.toFixed(2)} ms, ` +
            `server ${window.serverCpuUs.toFixed(1)} µs CPU/req, Redis ${window.redisCpuUs.toFixed(1)} µs/req` +
            (window.load.non2xx + window.load.errors > 0
              ? `, ${window.load.non2xx} non-2xx, ${window.load.errors} errors`
              : ''),
        );
      }
    }
    report(windows);
  } finally {
    for (const server of servers.reverse()) await server.stop();
    const keys = await admin.keys(`${keyPrefix}*`).catch(() => []);
    if (keys.length > 0) await admin.del(...keys);
    admin.disconnect();
    rmSync(workDir, { recursive: true, force: true });
  }
}

function report(windows: Record<Variant['name'], Window[]>): void {
  const pair = (f: (w: Window) => number, against: Variant['name'] = 'before') =>
    windows.after.map((after, i) => f(after) / f(windows[against][i] as Window));
  const vsInProcess = summarizeRatios(
    pair((w) => w.load.rps, 'in-process'),
    margin,
  );
  const cpuVsInProcess = summarizeRatios(
    pair((w) => w.serverCpuUs, 'in-process'),
    margin,
  );
  const throughput = summarizeRatios(
    pair((w) => w.load.rps),
    margin,
  );
  const cpu = summarizeRatios(
    pair((w) => w.serverCpuUs),
    margin,
  );
  const p99 = summarizeRatios(
    pair((w) => w.load.p99Ms),
    margin,
  );
  const med = (name: Variant['name'], f: (w: Window) => number) => median(windows[name].map(f));
  const row = (variant: Variant) => {
    const w = windows[variant.name];
    const m = (f: (x: Window) => number, d = 0) => med(variant.name, f).toFixed(d);
    return `| ${variant.name}: ${variant.label} | ${w.map((x) => x.load.rps.toFixed(0)).join(', ')} | ${m((x) => x.load.rps)} | ${m((x) => x.load.p50Ms, 2)} | ${m((x) => x.load.p99Ms, 2)} | ${m((x) => x.serverCpuUs, 1)} | ${m((x) => x.redisCpuUs, 1)} |`;
  };
  const stamp = new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19);
  const flaggedNote = (s: RatioSummary) =>
    s.flagged
      ? ` — rounds disagree by ${(s.spread * 100).toFixed(0)} % (> ${margin * 100} %): not trusted`
      : '';
  const markdown = [
    `# Cache tier bench ${stamp}`,
    '',
    `GET /api/products/:id (100 products, all cached), ${rounds} interleaved rounds of ${duration} s each way, ${connections} connections; server on core ${serverCore}${hasProc ? '' : ' (no /proc: CPU not measured)'}.`,
    '',
    '| Variant | req/s per round | req/s (median) | p50 ms | p99 ms | server CPU µs/req | Redis CPU µs/req |',
    '|---|---|---|---|---|---|---|',
    ...variants.map(row),
    '',
    `- after / before, throughput: **${formatRatio(throughput)}**${flaggedNote(throughput)}`,
    `- after / before, server CPU per request: **${formatRatio(cpu)}**${flaggedNote(cpu)}`,
    `- after / before, p99: ${formatRatio(p99)}`,
    `- after / in-process, throughput: **${formatRatio(vsInProcess)}**${flaggedNote(vsInProcess)}; server CPU per request: ${formatRatio(cpuVsInProcess)}`,
    '',
  ].join('\n');
  process.stdout.write(`${markdown}\n`);
  const dir = flags.out ?? join(root, 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  if (!smoke) {
    writeFileSync(join(dir, `cache-tier-${stamp}.md`), markdown);
    writeFileSync(
      join(dir, `cache-tier-${stamp}.json`),
      `${JSON.stringify({ rounds, duration, connections, windows, throughput, cpu, p99, vsInProcess, cpuVsInProcess }, null, 2)}\n`,
    );
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
