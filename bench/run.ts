#!/usr/bin/env node
/**
 * `npm run bench` — every hot path against its baselines, on this machine, in one run.
 *
 *   npm run bench                      full run: 3 interleaved rounds of 5 s per target, 50 connections,
 *                                      a 20 s RSS soak (about 7 minutes)
 *   npm run bench -- --quick           3 rounds of 2 s, no soak (about 3 minutes)
 *   npm run bench -- --smoke           1 round of 1 s (the test suite runs this)
 *   npm run bench -- --soak            only the RSS soak: 1,000,000 requests (--soak-requests N),
 *                                      RSS sampled throughout, heap snapshots compared
 *   npm run bench -- --profile product  V8 CPU profile of one 10 s window as a µs-per-part budget
 *                                      (product: warm GET /api/products/:id in-process; orders:
 *                                      POST /api/orders; me: GET /api/users/me on PostgreSQL + Redis)
 *   npm run bench -- --quick --only 3  just scenario 3 (orders against pgbench), for instance
 *   npm run bench -- --rounds 5 --duration 10 --connections 100 --margin 0.15
 *
 * Each scenario runs beside its baseline, interleaved (A, B, A, B …): every server is up for the
 * whole run and the targets take turns, so a ratio compares moments seconds apart, never minutes.
 * The report gives the median of the per-round ratios with its range, and flags a ratio whose
 * rounds disagree by more than the margin ((max − min) / median > 0.20 by default). Beside the
 * throughput it gives the server's CPU time per request (user + system from /proc over the
 * measured window; for orders and pgbench also PostgreSQL's), which moves far less with the
 * machine's noise.
 *
 * The service runs built and in production mode; the servers are pinned to core 0 and the load
 * generator (wrk, or autocannon without it) to core 1 when `taskset` exists. Baselines: bare
 * node:http, the guide's Express template, pgbench's TPC-B-like run, one password hash timed
 * in-process. Results go to bench/results/ (Markdown, JSON and an SVG chart) and, for a full
 * run, into the README.
 */
import { execFile, fork, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs, promisify } from 'node:util';
import { Redis } from 'ioredis';
import pg from 'pg';
import { loadConfig } from '../src/config.js';
import { createPasswordHasher } from '../src/modules/auth/passwords.js';
import { createTokenService } from '../src/modules/auth/tokens.js';
import { freePort } from '../test/harness/ports.js';
import { cpuSeconds, hasProc, parentPid, postgresCpuSeconds, withChildren } from './lib/cpu.js';
import { hasNginx, startEdge } from './lib/edge.js';
import { heapGrowth, summarizeHeap } from './lib/heap.js';
import { hasWrk, type LoadOptions, type LoadResult, runLoad } from './lib/load.js';
import { canPin, pinned, type Server, startServer } from './lib/processes.js';
import { budgetTable, profileBudget } from './lib/profile.js';
import { formatRatio, median, type RatioSummary, summarizeRatios } from './lib/rounds.js';
import { type RatioBar, renderChart } from './lib/svg.js';

const run = promisify(execFile);
const root = new URL('..', import.meta.url).pathname;

const { values: flags } = parseArgs({
  options: {
    smoke: { type: 'boolean', default: false },
    quick: { type: 'boolean', default: false },
    soak: { type: 'boolean', default: false },
    profile: { type: 'string' },
    only: { type: 'string' },
    'soak-requests': { type: 'string' },
    'soak-seconds': { type: 'string' },
    rounds: { type: 'string' },
    duration: { type: 'string' },
    connections: { type: 'string' },
    margin: { type: 'string' },
    out: { type: 'string' },
  },
});
const smoke = flags.smoke ?? false;
const quick = flags.quick ?? false;
const soakMode = flags.soak ?? false;
const profileScenario = flags.profile;
if (profileScenario !== undefined && !['product', 'orders', 'me'].includes(profileScenario))
  throw new Error(
    '--profile takes product (warm GET /api/products/:id, in-process), orders, or me (GET /api/users/me, PostgreSQL + Redis)',
  );
const mode = smoke ? 'smoke' : quick ? 'quick' : soakMode ? 'soak' : profileScenario ? 'profile' : 'full';
const duration = Number(flags.duration ?? (smoke ? 1 : quick ? 2 : profileScenario ? 10 : 5));
const warmupSeconds = smoke || quick ? 1 : 2;
const rounds = Number(flags.rounds ?? (smoke ? 1 : 3));
const connections = Number(flags.connections ?? (smoke ? 10 : 50));
const margin = Number(flags.margin ?? 0.2);
const soakSeconds = Number(flags['soak-seconds'] ?? (mode === 'full' ? 20 : 0));
const soakRequests = Number(flags['soak-requests'] ?? 1_000_000);
/** `--only 1,3`: just those scenarios (setup is the same). */
const only = flags.only?.split(',').map((n) => n.trim());
const included = (scenario: string) => only === undefined || only.includes(scenario.split(' ')[0] ?? '');
const serverCore = 0;
const orderProducts = 50;
const loadCore = availableParallelism() > 1 ? 1 : undefined;

const postgresAdminUrl = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const redisUrl = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
const origin = 'https://shop.example.com';
const jwtSecret = randomBytes(48).toString('base64');
const adminPassword = `bench admin ${randomBytes(6).toString('hex')}`;
const customerPassword = 'bench customer password';

const workDir = mkdtempSync(join(tmpdir(), 'shipshape-bench-'));
/** The benchmark's Redis keys: under REDIS_KEY_PREFIX when set (a shared server), deleted at the end. */
const benchKeyPrefix = `${process.env.REDIS_KEY_PREFIX ?? ''}bench:${process.pid}:`;
// Ports the kernel says are free: a fixed range collided with the machine's own services
// (NATS on 4222: nginx could not bind, seen in CI).
const port = freePort;

function log(message: string): void {
  process.stderr.write(`bench: ${message}\n`);
}

async function reachable(url: string): Promise<boolean> {
  const { createConnection } = await import('node:net');
  const { hostname, port: p } = new URL(url);
  return new Promise((resolve) => {
    const socket = createConnection({ host: hostname, port: Number(p) });
    socket.setTimeout(2000);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
    socket.once('timeout', () => {
      socket.destroy();
      resolve(false);
    });
  });
}

async function adminQuery(sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: postgresAdminUrl });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

function databaseUrl(name: string): string {
  const url = new URL(postgresAdminUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

/** Environment every service variant shares: production mode, all middleware on, limits that never trip. */
function serviceEnv(extra: Record<string, string>): Record<string, string> {
  return {
    NODE_ENV: 'production',
    JWT_SECRET: jwtSecret,
    LOG_LEVEL: 'info',
    CORS_ORIGINS: origin,
    // The limiter runs on every request; its limit is out of reach so the run measures answers.
    RATE_LIMIT_MAX: '1000000000',
    AUTH_RATE_LIMIT_MAX: '1000000000',
    LOGIN_MAX_FAILURES: '1000',
    ACCESS_TOKEN_TTL_SECONDS: '3600',
    SHUTDOWN_GRACE_MS: '0',
    DATABASE_MIGRATE_ON_START: 'true',
    ...extra,
  };
}

async function cli(
  script: string,
  env: Record<string, string>,
  input?: string,
  ...args: string[]
): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(root, 'dist', 'cli', `${script}.js`), ...args], {
      env: { ...process.env, ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (c) => {
      output += c;
    });
    child.stderr.on('data', (c) => {
      output += c;
    });
    child.on('exit', (code) =>
      code === 0 ? resolve(output) : reject(new Error(`${script} failed: ${output}`)),
    );
    child.stdin.end(input ?? '');
  });
}

async function api(p: number, method: string, path: string, body?: unknown, token?: string) {
  const res = await fetch(`http://127.0.0.1:${p}${path}`, {
    method,
    headers: {
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, json: text === '' ? undefined : JSON.parse(text) };
}

interface Fixture {
  productIds: string[];
  productJson: string;
  /** Products with stock no benchmark can exhaust, for orders; many, so orders do not all queue on one row lock. */
  orderProductIds: string[];
  customerToken: string;
  customerLogin: string;
}

/** Seeds a fresh database (1,000 demo products), an admin, a customer and a product with endless stock. */
async function prepareData(env: Record<string, string>, p: number): Promise<Fixture> {
  const admin = await api(p, 'POST', '/api/auth/login', { login: 'benchadmin', password: adminPassword });
  if (admin.status !== 200) throw new Error(`admin login failed: ${admin.status}`);
  const adminToken = admin.json.accessToken as string;

  let register = await api(p, 'POST', '/api/auth/register', {
    email: 'bench-customer@example.com',
    username: 'benchcustomer',
    password: customerPassword,
  });
  if (register.status === 409) {
    register = await api(p, 'POST', '/api/auth/login', {
      login: 'benchcustomer',
      password: customerPassword,
    });
  }
  if (register.status !== 201 && register.status !== 200)
    throw new Error(`customer setup failed: ${register.status}`);

  const orderProductIds: string[] = [];
  for (let i = 0; i < orderProducts; i++) {
    const sku = `BENCH-${env.DATABASE_URL === undefined ? 'SQLITE' : 'PG'}-${i}`;
    let created = await api(
      p,
      'POST',
      '/api/products',
      { sku, name: `Bench product ${i}`, price: '9.99', stock: 1_000_000_000 },
      adminToken,
    );
    if (created.status === 409) {
      const found = await api(p, 'GET', `/api/products?q=${sku}&limit=1`);
      created = { status: 200, json: found.json.items[0] };
    }
    if (created.status !== 201 && created.status !== 200)
      throw new Error(`bench product setup failed: ${created.status}`);
    orderProductIds.push(created.json.id as string);
  }

  const page = await api(p, 'GET', '/api/products?limit=100');
  const productIds = (page.json.items as Array<{ id: string }>).map((item) => item.id);
  const first = await fetch(`http://127.0.0.1:${p}/api/products/${productIds[0]}`);
  return {
    productIds,
    productJson: await first.text(),
    orderProductIds,
    customerToken: register.json.accessToken as string,
    customerLogin: 'benchcustomer',
  };
}

type Load = Omit<LoadOptions, 'durationSeconds' | 'connections' | 'core'>;

interface Sample extends LoadResult {
  /** The server's CPU (user + system) per request over the window, µs. */
  readonly cpuUs?: number;
  /** PostgreSQL's CPU (every process of the server) per request over the window, µs. */
  readonly dbCpuUs?: number;
}

interface Target {
  readonly key: string;
  readonly target: string;
  /** One measured window of `seconds`. */
  readonly run: (seconds: number) => Promise<LoadResult>;
  /** The server processes whose CPU is the scenario's (the app; with the edge, nginx too). */
  readonly pids?: () => number[];
  /** PostgreSQL's CPU counts too (orders, pgbench). */
  readonly db?: boolean;
}

interface RatioDef {
  readonly key: string;
  readonly name: string;
  readonly num: string;
  /** A target's key, or a fixed figure (the hash limit). */
  readonly den: string | { readonly label: string; readonly value: number | undefined };
  readonly goal?: number;
}

interface Group {
  readonly scenario: string;
  readonly targets: readonly Target[];
  readonly ratios: readonly RatioDef[];
}

interface Row {
  readonly scenario: string;
  readonly target: string;
  readonly key: string;
  /** The median round (by throughput), with the errors and non-2xx of every round. */
  readonly result: Sample;
  readonly rounds: readonly Sample[];
}

interface RatioResult extends RatioSummary {
  readonly key: string;
  readonly scenario: string;
  readonly name: string;
  readonly goal?: number;
}

const rows: Row[] = [];
const ratios: RatioResult[] = [];
const notes: string[] = [];
const memory: Array<{ target: string; beforeMiB: number; afterMiB: number; samples?: number[] }> = [];
let postmasterPid: number | undefined;
/** The statements of one order, by SQL text (from roundTripsPerOrder). */
let orderStatements: Record<string, number> = {};

function load(options: Load): (seconds: number) => Promise<LoadResult> {
  return (seconds) => runLoad({ ...options, connections, core: loadCore, durationSeconds: seconds });
}

function serverTarget(key: string, target: string, server: Server, options: Load, db = false): Target {
  return {
    key,
    target,
    run: load(options),
    pids: () => (server.child.pid === undefined ? [] : [server.child.pid]),
    db,
  };
}

async function sample(target: Target): Promise<Sample> {
  const pids = target.pids?.() ?? [];
  const cpuBefore = hasProc ? cpuSeconds(pids) : 0;
  const dbBefore = target.db && postmasterPid !== undefined ? postgresCpuSeconds(postmasterPid) : undefined;
  let result = await target.run(duration);
  // A smoke run only proves that every scenario answers. On a loaded machine one second may not
  // complete a single ~600 ms login, so an empty smoke scenario gets longer instead of failing.
  for (let seconds = 5; smoke && result.requests === 0 && seconds <= 20; seconds *= 2)
    result = await target.run(seconds);
  // Backends that exited with their client (pgbench's) are counted once the postmaster reaps them.
  if (dbBefore !== undefined) await sleep(200);
  const perRequest = (seconds: number) =>
    result.requests > 0 ? (seconds * 1e6) / result.requests : undefined;
  const cpuUs = hasProc && pids.length > 0 ? perRequest(cpuSeconds(pids) - cpuBefore) : undefined;
  const dbCpuUs =
    dbBefore !== undefined && postmasterPid !== undefined
      ? perRequest(postgresCpuSeconds(postmasterPid) - dbBefore)
      : undefined;
  return {
    ...result,
    ...(cpuUs === undefined ? {} : { cpuUs }),
    ...(dbCpuUs === undefined ? {} : { dbCpuUs }),
  };
}

function fmt(v: number | undefined, digits = 0): string {
  return v === undefined || !Number.isFinite(v) ? '' : v.toFixed(digits);
}

/**
 * One scenario: every target warmed up, then `rounds` rounds in which each target runs once in
 * turn (A, B, A, B …). Rows keep each target's median round; ratios are computed per round.
 */
async function runGroup(group: Group): Promise<void> {
  const targets = group.targets;
  if (targets.length === 0) return;
  for (const t of targets) await t.run(warmupSeconds);
  const perTarget = new Map<string, Sample[]>(targets.map((t) => [t.key, []]));
  for (let round = 0; round < rounds; round++) {
    for (const t of targets) perTarget.get(t.key)?.push(await sample(t));
  }
  for (const t of targets) {
    const samples = perTarget.get(t.key) ?? [];
    const sorted = [...samples].sort((a, b) => a.rps - b.rps);
    const mid = sorted[Math.floor(sorted.length / 2)] as Sample;
    const cpu = samples.map((s) => s.cpuUs).filter((v): v is number => v !== undefined);
    const db = samples.map((s) => s.dbCpuUs).filter((v): v is number => v !== undefined);
    const result: Sample = {
      ...mid,
      errors: samples.reduce((n, s) => n + s.errors, 0),
      non2xx: samples.reduce((n, s) => n + s.non2xx, 0),
      ...(cpu.length > 0 ? { cpuUs: median(cpu) } : {}),
      ...(db.length > 0 ? { dbCpuUs: median(db) } : {}),
    };
    rows.push({ scenario: group.scenario, target: t.target, key: t.key, result, rounds: samples });
    log(
      `${group.scenario} | ${t.target}: ${result.rps.toFixed(0)} req/s (rounds: ${samples.map((s) => s.rps.toFixed(0)).join(', ')}), p50 ${result.p50Ms.toFixed(2)} ms, p99 ${result.p99Ms.toFixed(2)} ms, CPU ${fmt(result.cpuUs)} µs/req${result.dbCpuUs === undefined ? '' : ` + PostgreSQL ${fmt(result.dbCpuUs)} µs/req`}, errors ${result.errors}, non-2xx ${result.non2xx}`,
    );
  }
  for (const r of group.ratios) {
    const nums = perTarget.get(r.num);
    const den = r.den;
    if (nums === undefined) continue;
    const perRound = nums.map((n, i) => {
      const d = typeof den === 'string' ? perTarget.get(den)?.[i]?.rps : den.value;
      return d === undefined || d === 0 ? Number.NaN : n.rps / d;
    });
    if (typeof den === 'string' && !perTarget.has(den)) continue;
    const summary = summarizeRatios(perRound, margin);
    ratios.push({
      ...summary,
      key: r.key,
      scenario: group.scenario,
      name: r.name,
      ...(r.goal === undefined ? {} : { goal: r.goal }),
    });
    log(
      `${r.name}: ${formatRatio(summary)}${summary.flagged ? ` — rounds disagree by ${(summary.spread * 100).toFixed(0)}% (> ${(margin * 100).toFixed(0)}%)` : ''}`,
    );
  }
}

interface Service {
  readonly target: string;
  readonly server: Server;
  readonly beforeMiB: number;
}

const services: Service[] = [];

async function startService(
  target: string,
  env: Record<string, string>,
  nodeArgs: string[] = [],
  cwd?: string,
): Promise<Server> {
  const server = await startServer({
    name: target,
    port: await port(),
    command: process.execPath,
    args: [...nodeArgs, join(root, 'dist', 'main.js')],
    env,
    core: serverCore,
    logFile: join(workDir, `${target.replace(/\W+/g, '-')}.log`),
    readyPath: '/ready',
    ...(cwd === undefined ? {} : { cwd }),
  });
  services.push({ target, server, beforeMiB: server.rssMiB() });
  return server;
}

async function startBaseline(name: string, script: string, env: Record<string, string>): Promise<Server> {
  const server = await startServer({
    name,
    port: await port(),
    command: process.execPath,
    args: [join(root, 'bench', 'baselines', script)],
    env,
    core: serverCore,
    logFile: join(workDir, `${name.replace(/\W+/g, '-')}.log`),
  });
  services.push({ target: name, server, beforeMiB: server.rssMiB() });
  return server;
}

async function stopServices(): Promise<void> {
  for (const s of services.splice(0).reverse()) {
    if (!s.target.startsWith('baseline'))
      memory.push({ target: s.target, beforeMiB: s.beforeMiB, afterMiB: s.server.rssMiB() });
    const code = await s.server.stop();
    if (code !== 0 && !s.target.startsWith('baseline'))
      notes.push(`${s.target} exited with ${code} on SIGTERM`);
  }
}

/** pgbench's TPC-B-like database, initialised once; each round is one `pgbench -T` window. */
async function pgbenchTarget(): Promise<{ target: Target; drop: () => Promise<void> } | undefined> {
  try {
    await run('pgbench', ['--version']);
  } catch {
    notes.push(
      'pgbench is not installed: scenario 3 has no database baseline (apt-get install postgresql-client)',
    );
    return undefined;
  }
  const name = `shipshape_bench_pgbench_${process.pid}`;
  await adminQuery(`CREATE DATABASE ${name}`);
  const url = databaseUrl(name);
  await run('pgbench', ['-i', '-s', '10', '-q', url]);
  let window = 0;
  const target: Target = {
    key: 'pgbench',
    target: 'baseline: pgbench TPC-B-like, same PostgreSQL',
    db: true,
    async run(seconds) {
      const dir = join(workDir, `pgbench-${window++}`);
      mkdirSync(dir);
      const [command, args] = pinned(loadCore, 'pgbench', [
        '-c',
        String(connections),
        '-j',
        '1',
        '-T',
        String(seconds),
        '-n',
        '-l',
        `--log-prefix=${join(dir, 'tx')}`,
        url,
      ]);
      const { stdout } = await run(command, args, { maxBuffer: 10 * 1024 * 1024 });
      const tps = Number(/tps = ([\d.]+) \(without initial connection time\)/.exec(stdout)?.[1] ?? 0);
      // Per-transaction log: client, transaction, latency µs, script, epoch s, epoch µs.
      const latencies: number[] = [];
      for (const file of readdirSync(dir)) {
        for (const line of readFileSync(join(dir, file), 'utf8').split('\n')) {
          const us = Number(line.split(' ')[2]);
          if (Number.isFinite(us) && line !== '') latencies.push(us / 1000);
        }
      }
      rmSync(dir, { recursive: true, force: true });
      latencies.sort((a, b) => a - b);
      const at = (q: number) =>
        latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0;
      const failed = Number(/number of failed transactions: (\d+)/.exec(stdout)?.[1] ?? 0);
      return {
        tool: 'wrk',
        requests: latencies.length,
        rps: tps,
        p50Ms: at(0.5),
        p95Ms: at(0.95),
        p99Ms: at(0.99),
        errors: failed,
        non2xx: 0,
      };
    },
  };
  return { target, drop: () => adminQuery(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`) };
}

/** PostgreSQL's postmaster, when it runs on this machine (CPU from /proc); else undefined. */
async function findPostmaster(): Promise<number | undefined> {
  const host = new URL(postgresAdminUrl).hostname;
  if (!['127.0.0.1', 'localhost', '::1', '[::1]'].includes(host) || !hasProc) return undefined;
  const client = new pg.Client({ connectionString: postgresAdminUrl });
  await client.connect();
  try {
    const { rows: found } = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
    const backend = found[0]?.pid;
    return backend === undefined ? undefined : parentPid(backend);
  } finally {
    await client.end();
  }
}

/**
 * Statements per order on PostgreSQL: a short-lived server with a preload that counts, by SQL text,
 * what node-postgres sends (each statement is one round trip: it does not pipeline), then `count`
 * single-line orders with idempotency keys, one at a time. A statement counts when it ran at least
 * once per order; the server's background statements (flag refreshes and the like) do not.
 */
async function roundTripsPerOrder(
  env: Record<string, string>,
  fixture: Fixture,
  count: number,
): Promise<{ perOrder: number; statements: Record<string, number> }> {
  const countFile = join(workDir, 'query-count.json');
  const server = await startServer({
    name: 'round-trip counter',
    port: await port(),
    command: process.execPath,
    args: ['--import', join(root, 'bench', 'lib', 'count-queries.mjs'), join(root, 'dist', 'main.js')],
    env: { ...env, BENCH_QUERY_COUNT_FILE: countFile },
    core: serverCore,
    logFile: join(workDir, 'round-trip-counter.log'),
    readyPath: '/ready',
  });
  const read = async (): Promise<Record<string, number>> => {
    rmSync(countFile, { force: true });
    server.child.kill('SIGUSR2');
    for (let i = 0; i < 400 && !existsSync(countFile); i++) await sleep(25);
    return JSON.parse(readFileSync(countFile, 'utf8')) as Record<string, number>;
  };
  try {
    const place = (i: number) =>
      fetch(`http://127.0.0.1:${server.port}/api/orders`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${fixture.customerToken}`,
          'content-type': 'application/json',
          'idempotency-key': `rt-${process.pid}-${i}-${randomBytes(4).toString('hex')}`,
        },
        body: JSON.stringify({
          items: [{ productId: fixture.orderProductIds[i % fixture.orderProductIds.length], quantity: 1 }],
        }),
      }).then(async (res) => {
        await res.text();
        if (res.status !== 201) throw new Error(`round-trip count: order answered ${res.status}`);
      });
    await place(0); // warm: the first order may prepare what later ones reuse
    const before = await read();
    for (let i = 1; i <= count; i++) await place(i);
    const after = await read();
    const statements: Record<string, number> = {};
    let perOrder = 0;
    for (const [text, n] of Object.entries(after)) {
      const delta = n - (before[text] ?? 0);
      if (delta < count) continue;
      statements[text.replace(/\s+/g, ' ').slice(0, 120)] = delta / count;
      perOrder += delta / count;
    }
    return { perOrder, statements };
  } finally {
    await server.stop();
  }
}

/** The 20 s RSS soak of a full run: the Redis-backed server under load, RSS every 5 s. */
async function shortSoak(server: Server, ids: string[]): Promise<void> {
  const samples: number[] = [];
  const soak = runLoad({
    port: server.port,
    paths: ids,
    headers: { origin },
    connections,
    durationSeconds: soakSeconds,
    core: loadCore,
  });
  for (let t = 0; t < soakSeconds; t += 5) {
    await sleep(5000);
    samples.push(Math.round(server.rssMiB()));
  }
  const soaked = await soak;
  memory.push({
    target: `soak ${soakSeconds} s, GET /api/products/:id`,
    beforeMiB: samples[0] ?? 0,
    afterMiB: samples.at(-1) ?? 0,
    samples,
  });
  if (soaked.errors + soaked.non2xx > 0)
    notes.push(`soak: ${soaked.errors} errors, ${soaked.non2xx} non-2xx`);
}

async function heapSnapshot(server: Server, dir: string): Promise<string> {
  const before = new Set(readdirSync(dir));
  server.child.kill('SIGUSR2');
  const deadline = Date.now() + 120_000;
  for (;;) {
    const file = readdirSync(dir).find((f) => f.endsWith('.heapsnapshot') && !before.has(f));
    if (file !== undefined) {
      // Written synchronously on the server's main thread: complete once it answers again and
      // the size holds still.
      const path = join(dir, file);
      const size = statSync(path).size;
      const res = await fetch(`http://127.0.0.1:${server.port}/ready`).catch(() => undefined);
      await res?.text();
      await sleep(500);
      if (res?.ok && statSync(path).size === size && size > 0) return path;
    }
    if (Date.now() > deadline) throw new Error('no heap snapshot within 120 s');
    await sleep(250);
  }
}

/** The V8 heap in use, from the service's own /metrics (prom-client's default metrics), MiB. */
async function heapUsedMiB(server: Server): Promise<number | undefined> {
  const res = await fetch(`http://127.0.0.1:${server.port}/metrics`).catch(() => undefined);
  const text = (await res?.text()) ?? '';
  const value = /^nodejs_heap_size_used_bytes (\S+)/m.exec(text)?.[1];
  return value === undefined ? undefined : Math.round((Number(value) / 2 ** 20) * 10) / 10;
}

/**
 * `--soak`: at least `soakRequests` warm GET /api/products/:id on the Redis-backed server (the scale
 * stage), RSS and the V8 heap in use sampled every 2 s throughout. Heap snapshots raise RSS for
 * good, so they come only after, and only if it grew: two snapshots a further fifth of the requests
 * apart, compared by constructor.
 */
async function soak(server: Server, ids: string[], heapDir: string): Promise<Record<string, unknown>> {
  const options: Load = { port: server.port, paths: ids, headers: { origin } };
  await load(options)(5);
  const samples: Array<{ s: number; requests: number; rssMiB: number; heapMiB?: number }> = [];
  const started = Date.now();
  let requests = 0;
  let errors = 0;
  let non2xx = 0;
  const pids = server.child.pid === undefined ? [] : [server.child.pid];
  const cpuBefore = cpuSeconds(pids);
  const record = async () => {
    const heap = await heapUsedMiB(server);
    samples.push({
      s: Math.round((Date.now() - started) / 1000),
      requests,
      rssMiB: Math.round(server.rssMiB()),
      ...(heap === undefined ? {} : { heapMiB: heap }),
    });
  };
  await record();
  const timer = setInterval(() => void record(), 2000);
  try {
    while (requests < soakRequests) {
      const r = await load(options)(10);
      requests += r.requests;
      errors += r.errors;
      non2xx += r.non2xx;
      log(`soak: ${requests} requests, RSS ${server.rssMiB().toFixed(0)} MiB`);
    }
  } finally {
    clearInterval(timer);
  }
  await record();
  const seconds = (Date.now() - started) / 1000;
  const cpuUs = ((cpuSeconds(pids) - cpuBefore) * 1e6) / requests;
  const tenth = Math.max(1, Math.floor(samples.length / 10));
  // Skip the first tenth (the warm-up's allocations settling) when judging growth.
  const early = median(samples.slice(tenth, 2 * tenth).map((s) => s.rssMiB));
  const late = median(samples.slice(-tenth).map((s) => s.rssMiB));
  const heapOf = (list: typeof samples) =>
    median(list.map((s) => s.heapMiB ?? Number.NaN).filter(Number.isFinite));
  const heapEarly = heapOf(samples.slice(tenth, 2 * tenth));
  const heapLate = heapOf(samples.slice(-tenth));
  const grew = late - early > 10 || heapLate - heapEarly > 10;
  let heap: Record<string, unknown> = { compared: false, earlyMiB: heapEarly, lateMiB: heapLate };
  if (grew) {
    log('soak: RSS or heap grew: comparing two heap snapshots a fifth of the requests apart');
    const before = summarizeHeap(await heapSnapshot(server, heapDir));
    let more = 0;
    while (more < soakRequests / 5) more += (await load(options)(10)).requests;
    const after = summarizeHeap(await heapSnapshot(server, heapDir));
    heap = {
      compared: true,
      earlyMiB: heapEarly,
      lateMiB: heapLate,
      startMiB: before.totalBytes / 2 ** 20,
      endMiB: after.totalBytes / 2 ** 20,
      between: more,
      growth: heapGrowth(before, after, 10),
    };
  }
  return {
    requests,
    seconds,
    rps: requests / seconds,
    errors,
    non2xx,
    cpuUs,
    rss: {
      early,
      late,
      min: Math.min(...samples.map((s) => s.rssMiB)),
      max: Math.max(...samples.map((s) => s.rssMiB)),
    },
    heap,
    samples,
  };
}

function soakReport(result: Record<string, unknown>, target: string): void {
  const r = result as {
    requests: number;
    seconds: number;
    rps: number;
    errors: number;
    non2xx: number;
    cpuUs: number;
    rss: { early: number; late: number; min: number; max: number };
    heap: {
      compared: boolean;
      earlyMiB: number;
      lateMiB: number;
      startMiB?: number;
      endMiB?: number;
      between?: number;
      growth?: Array<{ name: string; bytes: number; count: number }>;
    };
    samples: Array<{ s: number; requests: number; rssMiB: number; heapMiB?: number }>;
  };
  const date = new Date().toISOString();
  const lines = [
    `RSS soak ${date} on ${cpus()[0]?.model ?? 'unknown CPU'} (${availableParallelism()} cores), Node ${process.version}, load average ${loadavg()
      .map((l) => l.toFixed(1))
      .join(' ')} at the end.`,
    `${target}: ${r.requests} warm GET /api/products/:id in ${r.seconds.toFixed(0)} s (${r.rps.toFixed(0)} req/s, ${connections} connections), ${r.errors} errors, ${r.non2xx} non-2xx, server CPU ${r.cpuUs.toFixed(1)} µs a request.`,
    '',
    `RSS: ${r.rss.early} MiB over the second tenth of the samples, ${r.rss.late} MiB over the last (min ${r.rss.min}, max ${r.rss.max}; every 2 s). V8 heap in use (the service's /metrics): ${r.heap.earlyMiB} → ${r.heap.lateMiB} MiB.`,
    r.heap.compared
      ? `It grew: heap snapshots ${r.heap.between} requests apart, ${r.heap.startMiB?.toFixed(1)} → ${r.heap.endMiB?.toFixed(1)} MiB.`
      : 'Neither grew by more than 10 MiB: no heap snapshots taken (they would raise RSS themselves).',
    ...(r.heap.compared
      ? [
          '',
          '| Grew most (heap snapshot, end − start) | bytes | objects |',
          '|---|---:|---:|',
          ...(r.heap.growth ?? []).map(
            (g) => `| ${g.name.replace(/\|/g, '\\|').slice(0, 80)} | ${g.bytes} | ${g.count} |`,
          ),
        ]
      : []),
    '',
    `Samples (s: RSS MiB / heap MiB): ${r.samples
      .filter((_, i) => i % 10 === 0 || i === r.samples.length - 1)
      .map((s) => `${s.s}: ${s.rssMiB}/${s.heapMiB ?? '?'}`)
      .join(', ')}`,
  ];
  const markdown = `${lines.join('\n')}\n`;
  process.stdout.write(`\n${markdown}`);
  const outDir = flags.out ?? join(root, 'bench', 'results');
  mkdirSync(outDir, { recursive: true });
  const stamp = `${date.replace(/[:]/g, '-').replace(/\..*$/, '')}-soak`;
  writeFileSync(join(outDir, `${stamp}.md`), `# RSS soak ${date}\n\n${markdown}`);
  writeFileSync(
    join(outDir, `${stamp}.json`),
    `${JSON.stringify({ date, target, connections, ...result }, null, 2)}\n`,
  );
  log(`results written to ${join(outDir, stamp)}.{md,json}`);
}
/** One password hash with the production parameters, timed in-process (median of 5). */
async function hashMs(): Promise<number> {
  const hasher = createPasswordHasher(loadConfig({ NODE_ENV: 'production', JWT_SECRET: jwtSecret }).auth);
  const samples: number[] = [];
  for (let i = 0; i < 6; i++) {
    const started = performance.now();
    await hasher.hash(`password sample ${i}`);
    samples.push(performance.now() - started);
  }
  samples.shift();
  samples.sort((a, b) => a - b);
  return samples[2] ?? 0;
}

/**
 * The per-request cost of the request log line through each destination, in a child forked with an
 * IPC channel as PM2 forks its workers (bench/lib/log-cost.ts); this process plays PM2's daemon and
 * discards the messages.
 */
async function logLineMicros(): Promise<{ fd: number; pm2: number; perLineIpc: number }> {
  const child = fork(join(root, 'bench', 'lib', 'log-cost.ts'), [String(smoke ? 5000 : 50_000)], {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
  });
  child.on('message', () => {});
  let output = '';
  child.stdout?.on('data', (chunk) => {
    output += chunk;
  });
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  if (code !== 0) throw new Error(`bench/lib/log-cost.ts exited ${code}`);
  return JSON.parse(output);
}

/** The per-request cost of authentication: one JWT verification (the revocation check is a Map lookup). */
async function tokenVerifyMicros(): Promise<number> {
  const tokens = createTokenService(loadConfig({ NODE_ENV: 'production', JWT_SECRET: jwtSecret }).auth);
  const { accessToken } = await tokens.issueAccessToken({
    userId: '00000000-0000-4000-8000-000000000000',
    sessionId: '00000000-0000-4000-8000-000000000001',
    role: 'customer',
    sessionExpiresAt: new Date(Date.now() + 86_400_000).toISOString(),
  });
  const iterations = smoke ? 2000 : 20_000;
  for (let i = 0; i < 1000; i++) await tokens.verifyAccessToken(accessToken);
  const started = performance.now();
  for (let i = 0; i < iterations; i++) await tokens.verifyAccessToken(accessToken);
  return ((performance.now() - started) * 1000) / iterations;
}

/** Deletes the benchmark's keys (SCAN is fine here: a one-off at the end, never in the service). */
async function deleteBenchKeys(): Promise<void> {
  const client = new Redis(redisUrl, { maxRetriesPerRequest: 1, retryStrategy: () => null });
  client.on('error', () => {});
  try {
    let cursor = '0';
    do {
      const [next, keys] = await client.scan(cursor, 'MATCH', `${benchKeyPrefix}*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length > 0) await client.del(...keys);
    } while (cursor !== '0');
  } finally {
    client.disconnect();
  }
}

/**
 * `--profile product|orders`: one service with the in-process profiler preload, warmed up, then V8's
 * CPU profile of one measured window only, as a per-request budget (µs per part; bench/lib/profile.ts)
 * beside the CPU per request from /proc for the same window.
 */
async function profileRun(
  scenario: string,
  server: Server,
  options: Load,
  profileFile: string,
): Promise<void> {
  await load(options)(3);
  const signal = async () => {
    server.child.kill('SIGUSR2');
    await sleep(500);
  };
  await signal();
  const pid = server.child.pid === undefined ? [] : [server.child.pid];
  const cpuBefore = cpuSeconds(pid);
  const result = await load(options)(duration);
  const cpuUs = ((cpuSeconds(pid) - cpuBefore) * 1e6) / result.requests;
  server.child.kill('SIGUSR2');
  for (let i = 0; i < 400 && !existsSync(profileFile); i++) await sleep(50);
  await sleep(500);
  const budget = profileBudget(profileFile, result.requests);
  const date = new Date().toISOString();
  const markdown = [
    `CPU profile ${date} (${scenario}), ${cpus()[0]?.model ?? 'unknown CPU'}, Node ${process.version}, load average ${loadavg()
      .map((l) => l.toFixed(1))
      .join(' ')}.`,
    `${result.requests} requests in ${duration} s (${result.rps.toFixed(0)} req/s, ${connections} connections, p50 ${result.p50Ms.toFixed(2)} ms, p99 ${result.p99Ms.toFixed(2)} ms); server CPU from /proc ${cpuUs.toFixed(1)} µs a request (the profiler itself adds some).`,
    '',
    budgetTable(budget, cpuUs),
    '',
  ].join('\n');
  process.stdout.write(`\n${markdown}`);
  if (flags.out !== undefined) {
    mkdirSync(flags.out, { recursive: true });
    const stamp = `${date.replace(/[:]/g, '-').replace(/\..*$/, '')}-profile-${profileScenario}`;
    writeFileSync(join(flags.out, `${stamp}.md`), `# CPU profile ${date}\n\n${markdown}`);
    copyFileSync(profileFile, join(flags.out, `${stamp}.cpuprofile`));
    log(`results written to ${join(flags.out, stamp)}.md`);
  }
}

async function main(): Promise<void> {
  log(`building (${root}dist) …`);
  await run(process.execPath, [join(root, 'scripts', 'ensure-build.mjs')]);
  const hasPostgres = await reachable(postgresAdminUrl);
  const hasRedis = await reachable(redisUrl);
  const loadBefore = loadavg();
  log(
    `${mode} run: ${soakMode ? `${soakRequests} requests` : `${rounds} round(s) of ${duration} s per target after ${warmupSeconds} s warm-up`}, ${connections} connections; load generator ${hasWrk ? 'wrk' : 'autocannon'}; ${canPin ? `servers on core ${serverCore}, load on core ${loadCore}` : 'no taskset: not pinned'}; PostgreSQL ${hasPostgres ? 'yes' : 'no'}, Redis ${hasRedis ? 'yes' : 'no'}; load average ${loadBefore.map((l) => l.toFixed(1)).join(' ')}`,
  );
  if (soakMode && !hasPostgres)
    throw new Error('the soak runs the PostgreSQL-backed service: PostgreSQL is not reachable');

  const benchDb = `shipshape_bench_${process.pid}`;
  const sqlitePath = join(workDir, 'bench.db');
  const heapDir = join(workDir, 'heap');
  mkdirSync(heapDir);
  const results: Record<string, number | undefined> = {};
  let pgbench: Awaited<ReturnType<typeof pgbenchTarget>>;
  const idsOf = (f: Fixture) => f.productIds.slice(0, 50).map((id) => `/api/products/${id}`);

  try {
    // --- SQLite: the prototype stage -------------------------------------------------------------
    let sqlite: Server | undefined;
    let sqliteFixture: Fixture | undefined;
    const profileFile = join(workDir, 'bench.cpuprofile');
    const profiler = ['--import', join(root, 'bench', 'lib', 'cpu-profile.mjs')];
    if (!soakMode && profileScenario !== 'orders' && profileScenario !== 'me') {
      const sqliteEnv = serviceEnv({ SQLITE_PATH: sqlitePath });
      await cli('seed', sqliteEnv);
      await cli(
        'create-admin',
        sqliteEnv,
        `${adminPassword}\n`,
        '--email',
        'bench-admin@example.com',
        '--username',
        'benchadmin',
      );
      if (profileScenario === 'product') {
        const server = await startService(
          'service, SQLite',
          { ...sqliteEnv, BENCH_PROFILE_FILE: profileFile },
          profiler,
        );
        const profiled = await prepareData(sqliteEnv, server.port);
        await profileRun(
          'warm GET /api/products/:id, SQLite, in-process cache and limits',
          server,
          { port: server.port, paths: idsOf(profiled), headers: { origin } },
          profileFile,
        );
        return;
      }
      sqlite = await startService('service, SQLite', sqliteEnv);
      sqliteFixture = await prepareData(sqliteEnv, sqlite.port);
    }

    // --- PostgreSQL: with Redis (the scale stage), in-process (the MVP stage), cache off -----------
    let redisServer: Server | undefined;
    let memoryServer: Server | undefined;
    let coldServer: Server | undefined;
    let fixture: Fixture | undefined;
    const pgBase = { DATABASE_URL: databaseUrl(benchDb), DATABASE_POOL_MAX: '20' };
    const memoryEnv = serviceEnv(pgBase);
    if (!hasPostgres) {
      notes.push('PostgreSQL is not reachable: scenarios on PostgreSQL and pgbench were skipped');
    } else {
      await adminQuery(`CREATE DATABASE ${benchDb}`);
      await cli('seed', memoryEnv);
      await cli(
        'create-admin',
        memoryEnv,
        `${adminPassword}\n`,
        '--email',
        'bench-admin@example.com',
        '--username',
        'benchadmin',
      );
      postmasterPid = await findPostmaster().catch(() => undefined);
      if (profileScenario === 'orders') {
        const server = await startService(
          'service, PostgreSQL, in-process',
          { ...memoryEnv, BENCH_PROFILE_FILE: profileFile },
          profiler,
        );
        const profiled = await prepareData(memoryEnv, server.port);
        await profileRun(
          'POST /api/orders, PostgreSQL, in-process cache and limits',
          server,
          {
            port: server.port,
            method: 'POST',
            paths: ['/api/orders'],
            headers: { authorization: `Bearer ${profiled.customerToken}`, origin },
            bodies: profiled.orderProductIds.map((productId) => ({ items: [{ productId, quantity: 1 }] })),
            idempotency: true,
          },
          profileFile,
        );
        return;
      }
      if (postmasterPid === undefined)
        notes.push('PostgreSQL is not on this machine (or /proc is missing): no PostgreSQL CPU figures');
      const redisEnv = serviceEnv({ ...pgBase, REDIS_URL: redisUrl, REDIS_KEY_PREFIX: benchKeyPrefix });
      if (profileScenario === 'me') {
        // Scenario 5's server: PostgreSQL + Redis where Redis runs, else PostgreSQL alone.
        const env = hasRedis ? redisEnv : memoryEnv;
        const server = await startService(
          hasRedis ? 'service, PostgreSQL + Redis' : 'service, PostgreSQL, in-process',
          { ...env, BENCH_PROFILE_FILE: profileFile },
          profiler,
        );
        const profiled = await prepareData(env, server.port);
        await profileRun(
          `GET /api/users/me, PostgreSQL${hasRedis ? ' + Redis' : ', in-process'}`,
          server,
          {
            port: server.port,
            paths: ['/api/users/me'],
            headers: { authorization: `Bearer ${profiled.customerToken}`, origin },
          },
          profileFile,
        );
        return;
      }
      if (hasRedis) {
        redisServer = await startService(
          'service, PostgreSQL + Redis',
          redisEnv,
          soakMode ? ['--heapsnapshot-signal=SIGUSR2'] : [],
          soakMode ? heapDir : undefined,
        );
        fixture = await prepareData(redisEnv, redisServer.port);
      } else {
        notes.push('Redis is not reachable: the Redis-backed variants were skipped');
      }
      if (soakMode) {
        if (redisServer === undefined) {
          memoryServer = await startService(
            'service, PostgreSQL, in-process',
            memoryEnv,
            ['--heapsnapshot-signal=SIGUSR2'],
            heapDir,
          );
          fixture = await prepareData(memoryEnv, memoryServer.port);
        }
        const server = (redisServer ?? memoryServer) as Server;
        const target =
          redisServer === undefined ? 'service, PostgreSQL, in-process' : 'service, PostgreSQL + Redis';
        soakReport(await soak(server, idsOf(fixture as Fixture), heapDir), target);
        return;
      }
      memoryServer = await startService('service, PostgreSQL, in-process', memoryEnv);
      fixture ??= await prepareData(memoryEnv, memoryServer.port);
      coldServer = await startService('service, PostgreSQL, cache off', {
        ...(hasRedis ? redisEnv : memoryEnv),
        CACHE_ENABLED: 'false',
      });
      pgbench = await pgbenchTarget();
    }

    // --- Baselines, up for the whole run beside the service -----------------------------------------
    const productJson = (fixture ?? sqliteFixture)?.productJson ?? '{}';
    const bare = await startBaseline('baseline: bare node:http', 'node-http.mjs', {
      BASELINE_BODY: productJson,
    });
    const express = await startBaseline('baseline: guide Express', 'express-guide.mjs', {
      BASELINE_BODY: productJson,
      BASELINE_LOG: join(workDir, 'express-access.log'),
      RATE_LIMIT_MAX: '1000000000',
      CORS_ORIGIN: origin,
      NODE_ENV: 'production',
      STATIC_DIR: join(root, 'public'),
    });
    results.hashMs = await hashMs();
    const cores = canPin ? 1 : availableParallelism();
    const hashLimit = (cores * 1000) / results.hashMs;

    const product = { paths: ['/api/products/x'], headers: { origin } };
    const bareTarget = (key: string) =>
      serverTarget(key, 'baseline: bare node:http, same JSON', bare, { port: bare.port, ...product });
    const pgService = redisServer ?? memoryServer;
    const pgLabel =
      redisServer === undefined ? 'service, PostgreSQL, in-process' : 'service, PostgreSQL + Redis';
    const productTarget = (key: string, label: string, server?: Server, f?: Fixture): Target[] =>
      server && f
        ? [serverTarget(key, label, server, { port: server.port, paths: idsOf(f), headers: { origin } })]
        : [];
    const groups: Group[] = [
      {
        scenario: '1 GET /api/products/:id (warm)',
        targets: [
          ...productTarget('s1Sqlite', 'service, SQLite, in-process cache and limits', sqlite, sqliteFixture),
          ...productTarget(
            's1Memory',
            'service, PostgreSQL, in-process cache and limits',
            memoryServer,
            fixture,
          ),
          ...productTarget('s1Redis', 'service, PostgreSQL, Redis cache and limits', redisServer, fixture),
          bareTarget('nodeHttp'),
          serverTarget(
            'express',
            'baseline: guide-style Express (helmet, cors, rate limit, morgan)',
            express,
            { port: express.port, ...product },
          ),
        ],
        ratios: [
          {
            key: 's1Memory/nodeHttp',
            name: '1 in-process vs bare node:http',
            num: 's1Memory',
            den: 'nodeHttp',
            goal: 0.5,
          },
          {
            key: 's1Memory/express',
            name: '1 in-process vs guide Express',
            num: 's1Memory',
            den: 'express',
            goal: 8,
          },
          {
            key: 's1Redis/nodeHttp',
            name: '1 Redis-backed vs bare node:http',
            num: 's1Redis',
            den: 'nodeHttp',
            goal: 0.5,
          },
          {
            key: 's1Redis/express',
            name: '1 Redis-backed vs guide Express',
            num: 's1Redis',
            den: 'express',
            goal: 8,
          },
          {
            key: 's1Redis/s1Memory',
            name: '1 Redis-backed vs in-process',
            num: 's1Redis',
            den: 's1Memory',
            goal: 0.9,
          },
          { key: 's1Sqlite/nodeHttp', name: '1 SQLite vs bare node:http', num: 's1Sqlite', den: 'nodeHttp' },
        ],
      },
      {
        scenario: '2 GET /api/products?limit=20',
        targets: [
          ...(sqlite
            ? [
                serverTarget('s2Sqlite', 'service, SQLite, warm', sqlite, {
                  port: sqlite.port,
                  paths: ['/api/products?limit=20'],
                  headers: { origin },
                }),
              ]
            : []),
          ...(pgService
            ? [
                serverTarget('s2Warm', `${pgLabel}, warm`, pgService, {
                  port: pgService.port,
                  paths: ['/api/products?limit=20'],
                  headers: { origin },
                }),
              ]
            : []),
          ...(coldServer
            ? [
                serverTarget('s2Cold', 'service, PostgreSQL, cache disabled', coldServer, {
                  port: coldServer.port,
                  paths: ['/api/products?limit=20'],
                  headers: { origin },
                }),
              ]
            : []),
        ],
        ratios: [{ key: 's2Warm/s2Cold', name: '2 list warm vs cache off', num: 's2Warm', den: 's2Cold' }],
      },
    ];
    if (pgService && fixture) {
      const auth = { authorization: `Bearer ${fixture.customerToken}` };
      groups.push(
        {
          scenario: '3 POST /api/orders',
          targets: [
            serverTarget(
              's3',
              pgLabel,
              pgService,
              {
                port: pgService.port,
                method: 'POST',
                paths: ['/api/orders'],
                headers: { ...auth, origin },
                bodies: fixture.orderProductIds.map((productId) => ({ items: [{ productId, quantity: 1 }] })),
                idempotency: true,
              },
              true,
            ),
            ...(pgbench ? [pgbench.target] : []),
          ],
          ratios: [
            { key: 's3/pgbench', name: '3 orders vs pgbench TPC-B', num: 's3', den: 'pgbench', goal: 0.6 },
          ],
        },
        {
          scenario: '4 POST /api/auth/login',
          targets: [
            serverTarget('s4', pgLabel, pgService, {
              port: pgService.port,
              method: 'POST',
              paths: ['/api/auth/login'],
              headers: { origin },
              body: { login: fixture.customerLogin, password: customerPassword },
            }),
          ],
          ratios: [
            {
              key: 's4/hash',
              name: `4 logins vs cores ÷ one hash (${cores} core${cores > 1 ? 's' : ''}, ${results.hashMs.toFixed(1)} ms)`,
              num: 's4',
              den: { label: 'hash limit', value: hashLimit },
              goal: 0.8,
            },
          ],
        },
        {
          scenario: '5 GET /api/users/me',
          targets: [
            serverTarget('s5', pgLabel, pgService, {
              port: pgService.port,
              paths: ['/api/users/me'],
              headers: { ...auth, origin },
            }),
            bareTarget('nodeHttp5'),
          ],
          ratios: [
            {
              key: 's5/nodeHttp',
              name: '5 /api/users/me vs bare node:http',
              num: 's5',
              den: 'nodeHttp5',
              goal: 0.3,
            },
          ],
        },
      );
    }
    for (const group of groups.filter((g) => included(g.scenario))) await runGroup(group);

    // --- Scenario 6: the same server through the shipped nginx edge, TLS off and on ---------------
    if (pgService && fixture && hasNginx && included('6')) {
      const edge = await startEdge({
        dir: join(workDir, 'edge'),
        upstreamPort: pgService.port,
        httpPort: await port(),
        httpsPort: await port(),
        plainPort: await port(),
        statusPort: await port(),
        core: serverCore,
      });
      try {
        const through = { paths: idsOf(fixture), headers: { origin } };
        const both = () => [
          ...(pgService.child.pid === undefined ? [] : [pgService.child.pid]),
          ...withChildren(edge.pid),
        ];
        await runGroup({
          scenario: '6 GET /api/products/:id (edge)',
          targets: [
            serverTarget('edgeDirect', 'direct to the app server', pgService, {
              port: pgService.port,
              ...through,
            }),
            {
              key: 'edgePlain',
              target: 'through nginx, TLS off, upstream keep-alive',
              run: load({ port: edge.plainPort, ...through }),
              pids: both,
            },
            {
              key: 'edgeTls',
              target: 'through nginx, TLS 1.3, upstream keep-alive',
              run: load({ port: edge.httpsPort, scheme: 'https', ...through }),
              pids: both,
            },
          ],
          ratios: [
            {
              key: 'edgePlain/edgeDirect',
              name: '6 through nginx, TLS off, vs direct',
              num: 'edgePlain',
              den: 'edgeDirect',
            },
            {
              key: 'edgeTls/edgeDirect',
              name: '6 through nginx, TLS 1.3, vs direct',
              num: 'edgeTls',
              den: 'edgeDirect',
              goal: 0.7,
            },
          ],
        });
      } finally {
        await edge.stop();
      }
    } else if (!hasNginx) {
      notes.push('nginx is not installed: scenario 6 (through the edge) was skipped');
    }

    if (hasPostgres && fixture && included('3')) {
      const counted = await roundTripsPerOrder(memoryEnv, fixture, smoke ? 10 : 50);
      results.roundTripsPerOrder = counted.perOrder;
      orderStatements = counted.statements;
      log(`round trips per order: ${counted.perOrder.toFixed(1)} — ${JSON.stringify(counted.statements)}`);
    }
    if (soakSeconds > 0 && redisServer && fixture) await shortSoak(redisServer, idsOf(fixture));
    results.verifyUs = await tokenVerifyMicros();
    const logCost = await logLineMicros();
    results.logFdUs = logCost.fd;
    results.logPm2Us = logCost.pm2;
    results.logPerLineIpcUs = logCost.perLineIpc;
  } finally {
    await stopServices();
    await pgbench?.drop().catch(() => {});
    if (hasPostgres) await adminQuery(`DROP DATABASE IF EXISTS ${benchDb} WITH (FORCE)`).catch(() => {});
    if (hasRedis) await deleteBenchKeys().catch((err) => log(`could not delete ${benchKeyPrefix}*: ${err}`));
  }
  if (soakMode || profileScenario !== undefined) return;
  for (const row of rows) results[row.key] = row.result.rps;
  report(results, loadBefore);
}

function report(results: Record<string, number | undefined>, loadBefore: number[]): void {
  const date = new Date().toISOString();
  const loadAfter = loadavg();
  const rowOf = (key: string) => rows.find((r) => r.key === key);
  const targets: Array<{ name: string; value: string; met: boolean }> = [];
  for (const r of ratios) {
    if (r.goal === undefined) continue;
    targets.push({ name: `${r.name} ≥ ${r.goal}×`, value: formatRatio(r), met: r.median >= r.goal });
  }
  for (const [key, label] of [
    ['s1Memory', 'in-process'],
    ['s1Redis', 'Redis-backed'],
    ['s1Sqlite', 'SQLite'],
  ] as const) {
    const p99 = rowOf(key)?.result.p99Ms;
    if (p99 !== undefined)
      targets.push({
        name: `1 ${label} p99 ≤ 10 ms at ${connections} connections`,
        value: `${p99.toFixed(2)} ms`,
        met: p99 <= 10,
      });
  }
  const failures = rows.filter((r) => r.result.errors + r.result.non2xx > 0);
  const flagged = ratios.filter((r) => r.flagged);

  const lines: string[] = [];
  lines.push(
    `Run ${date} on ${cpus()[0]?.model ?? 'unknown CPU'} (${availableParallelism()} cores), Node ${process.version}; load average ${loadBefore.map((l) => l.toFixed(1)).join(' ')} at the start, ${loadAfter.map((l) => l.toFixed(1)).join(' ')} at the end.`,
  );
  lines.push(
    `${mode} run: ${rounds} interleaved round(s) of ${duration} s per target after ${warmupSeconds} s warm-up, ${connections} connections, ${rows[0]?.result.tool ?? 'wrk'}; ${canPin ? 'servers pinned to core 0, load generator to core 1' : 'not pinned (no taskset)'}. CPU is user + system time from /proc over each measured window, per request (µs): the server process (with the edge, nginx too); PostgreSQL's is every process of the server, whatever else uses it meanwhile.`,
  );
  lines.push('');
  lines.push(
    '| Scenario | Target | req/s (median) | rounds | p50 ms | p95 ms | p99 ms | CPU µs/req | PostgreSQL CPU µs/req | errors | non-2xx |',
  );
  lines.push('|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of rows) {
    lines.push(
      `| ${r.scenario} | ${r.target} | ${r.result.rps.toFixed(0)} | ${r.rounds.map((s) => s.rps.toFixed(0)).join(', ')} | ${r.result.p50Ms.toFixed(2)} | ${r.result.p95Ms.toFixed(2)} | ${r.result.p99Ms.toFixed(2)} | ${fmt(r.result.cpuUs)} | ${fmt(r.result.dbCpuUs)} | ${r.result.errors} | ${r.result.non2xx} |`,
    );
  }
  lines.push('');
  lines.push(`| Ratio (same rounds) | median (min–max) | spread | goal | met |`);
  lines.push('|---|---:|---:|---:|:---:|');
  for (const r of ratios) {
    lines.push(
      `| ${r.name} | ${formatRatio(r)} | ${(r.spread * 100).toFixed(0)}% | ${r.goal === undefined ? '' : `${r.goal}×`} | ${r.goal === undefined ? '' : r.median >= r.goal ? 'yes' : '**no**'} |`,
    );
  }
  for (const t of targets.filter((t) => t.name.includes('p99')))
    lines.push(`| ${t.name} | ${t.value} | | | ${t.met ? 'yes' : '**no**'} |`);
  lines.push('');
  lines.push(
    flagged.length === 0
      ? `Every ratio's rounds agree within ${(margin * 100).toFixed(0)}% ((max − min) / median).`
      : `⚠ **Rounds disagree** by more than ${(margin * 100).toFixed(0)}% ((max − min) / median): ${flagged.map((r) => `${r.name} (${(r.spread * 100).toFixed(0)}%)`).join('; ')} — read those ratios as noise-bound, and compare CPU per request instead.`,
  );
  const orders = rowOf('s3')?.result;
  const tpcb = rowOf('pgbench')?.result;
  lines.push('');
  lines.push(
    `Other figures: ${results.roundTripsPerOrder === undefined ? '' : `an idempotent single-line order makes ${results.roundTripsPerOrder.toFixed(1)} PostgreSQL round trips (statements counted in a separate server). `}${orders?.cpuUs === undefined ? '' : `An order costs ${fmt(orders.cpuUs)} µs of the app's CPU and ${fmt(orders.dbCpuUs)} µs of PostgreSQL's; a pgbench TPC-B transaction ${fmt(tpcb?.dbCpuUs)} µs of PostgreSQL's. `}One access-token verification costs ${results.verifyUs?.toFixed(1) ?? 'n/a'} µs in-process. One request log line costs ${results.logFdUs?.toFixed(1) ?? 'n/a'} µs buffered to a file (outside PM2), ${results.logPm2Us?.toFixed(1) ?? 'n/a'} µs under PM2, against ${results.logPerLineIpcUs?.toFixed(1) ?? 'n/a'} µs through PM2's own stdout hook.`,
  );
  lines.push('');
  lines.push('| Process | RSS at start, MiB | RSS at end, MiB |');
  lines.push('|---|---:|---:|');
  for (const m of memory) {
    lines.push(
      `| ${m.target} | ${m.beforeMiB.toFixed(0)} | ${m.afterMiB.toFixed(0)}${m.samples === undefined ? '' : ` (every 5 s: ${m.samples.join(', ')})`} |`,
    );
  }
  if (failures.length > 0 || notes.length > 0) {
    lines.push('');
    for (const f of failures)
      lines.push(
        `- **ERRORS**: ${f.scenario} on ${f.target}: ${f.result.errors} socket errors, ${f.result.non2xx} non-2xx responses.`,
      );
    for (const n of notes) lines.push(`- ${n}`);
  }
  const markdown = `${lines.join('\n')}\n`;
  process.stdout.write(`\n${markdown}`);

  const chart = renderChart({
    title: `Shipshape benchmark ${date.slice(0, 16).replace('T', ' ')} UTC (${mode})`,
    subtitle: `${cpus()[0]?.model ?? 'unknown CPU'}, ${availableParallelism()} cores, Node ${process.version}, load average ${loadBefore[0]?.toFixed(1)} → ${loadAfter[0]?.toFixed(1)}; ${rounds} round(s) × ${duration} s, ${connections} connections`,
    ratios: ratios.map(
      (r): RatioBar => ({
        label: r.name,
        median: r.median,
        min: r.min,
        max: r.max,
        flagged: r.flagged,
        ...(r.goal === undefined ? {} : { goal: r.goal }),
      }),
    ),
    latencies: rows.map((r) => ({
      label: `${r.scenario.split(' ')[0]} ${r.target}`.slice(0, 70),
      p50: r.result.p50Ms,
      p95: r.result.p95Ms,
      p99: r.result.p99Ms,
    })),
  });

  // A smoke or quick run keeps its results only where --out says; a full run writes bench/results/
  // and the README's table.
  const outDir = flags.out ?? (mode === 'full' ? join(root, 'bench', 'results') : undefined);
  const stamp = date.replace(/[:]/g, '-').replace(/\..*$/, '');
  if (outDir === undefined) {
    log(`${mode} run: results not kept (the table is above; --out DIR keeps them)`);
  } else {
    mkdirSync(outDir, { recursive: true });
    writeFileSync(
      join(outDir, `${stamp}.md`),
      `# Benchmark ${date}\n\n![Benchmark chart](${stamp}.svg)\n\n${markdown}`,
    );
    writeFileSync(join(outDir, `${stamp}.svg`), chart);
    writeFileSync(
      join(outDir, `${stamp}.json`),
      `${JSON.stringify({ date, mode, rounds, duration, connections, margin, loadBefore, loadAfter, rows, ratios, results, orderStatements, targets, memory, notes }, null, 2)}\n`,
    );
    log(`results written to ${join(outDir, stamp)}.{md,json,svg}`);
  }
  if (mode === 'full' && flags.out === undefined) updateReadme(markdown, `bench/results/${stamp}.svg`);
  if (failures.length > 0) {
    log(`!!! ${failures.length} scenario(s) had errors or non-2xx responses — see above`);
    process.exitCode = 1;
  }
}

function updateReadme(markdown: string, chart: string): void {
  const path = join(root, 'README.md');
  const readme = readFileSync(path, 'utf8');
  const start = '<!-- bench:start -->';
  const end = '<!-- bench:end -->';
  const from = readme.indexOf(start);
  const to = readme.indexOf(end);
  if (from < 0 || to < from) return;
  writeFileSync(
    path,
    `${readme.slice(0, from + start.length)}\n![Benchmark chart: ratios to the baselines and latency percentiles](${chart})\n\n${markdown}${readme.slice(to)}`,
  );
}

try {
  await main();
} finally {
  // Logs, the SQLite file, heap snapshots and the baselines' access log: nothing stays in the temp folder.
  rmSync(workDir, { recursive: true, force: true });
}
