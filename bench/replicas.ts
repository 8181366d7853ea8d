#!/usr/bin/env node
/**
 * `npm run bench:replicas` — catalog reads served by the streaming replica against the same reads
 * forced to the primary, on the scale stage's clusters (`npm run stack -- up --stage scale`).
 *
 *   npm run bench:replicas                              brings a scale stack up, measures, takes it down
 *   npm run bench:replicas -- --state-dir .stack        uses a running scale stack (left running)
 *   npm run bench:replicas -- --duration 5 --rounds 5 --connections 20   (--smoke: 1 s, 2 rounds)
 *
 * Three single-process services, built and in production mode, pinned to core 0 (the load
 * generator to core 1), the cache off so every request reads the database:
 *   replica            DATABASE_URL through PgBouncer, DATABASE_REPLICA_URLS the replica (as the stage runs)
 *   primary-pgbouncer  the same without replicas: every read on the primary, through PgBouncer
 *   primary-direct     the primary without PgBouncer (separates the pooler's hop from the replica's effect)
 * Measured in turn, round after round (A/B/C/A/B/C…), so a shared machine's drift hits each alike;
 * each round's ratio against the replica target is reported as a median with its range. It fails
 * unless the replica target's reads really ran on the replica (its db_replica_reads_total).
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { replicationRecord, roleUrl } from '../stack/components/replicated-postgres.js';
import { envValue } from '../stack/secrets.js';
import { down, readState, up } from '../stack/stack.js';
import { freePort } from '../stack/util.js';
import { runLoad } from './lib/load.js';
import { type Server, startServer } from './lib/processes.js';

const run = promisify(execFile);
const root = new URL('..', import.meta.url).pathname;
const { values: flags } = parseArgs({
  options: {
    smoke: { type: 'boolean', default: false },
    'state-dir': { type: 'string' },
    duration: { type: 'string' },
    rounds: { type: 'string' },
    connections: { type: 'string' },
    out: { type: 'string' },
  },
});
const smoke = flags.smoke ?? false;
const duration = Number(flags.duration ?? (smoke ? 1 : 5));
const rounds = Number(flags.rounds ?? (smoke ? 1 : 5));
const connections = Number(flags.connections ?? (smoke ? 5 : 20));
const serverCore = 0;
const loadCore = availableParallelism() > 1 ? 1 : undefined;

const log = (message: string) => process.stderr.write(`bench:replicas: ${message}\n`);
const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? 0;

// Catalog reads of different shapes (first page, a filtered page, a sorted page): list queries
// the router sends to a replica when one is healthy.
const paths = [
  '/api/products?limit=20',
  '/api/products?limit=20&minPrice=100.00',
  '/api/products?limit=50&inStock=true',
];

async function replicaReads(server: Server & { metricsPort: number }): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${server.metricsPort}/metrics`)).text();
  return text
    .split('\n')
    .filter((l) => l.startsWith('db_replica_reads_total{') && l.includes('target="replica"'))
    .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
}

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'shipshape-bench-replicas-'));
  chmodSync(work, 0o755);
  const ownStateDir = flags['state-dir'] === undefined ? join(work, 'stack') : undefined;
  const stateDir = flags['state-dir'] ?? (ownStateDir as string);
  const servers: Array<Server & { metricsPort: number }> = [];
  try {
    if (ownStateDir !== undefined) {
      log('bringing up a scale stack (a minute or two)');
      await up('scale', { stateDir: ownStateDir, log: (line) => log(line) });
    } else await run(process.execPath, [join(root, 'scripts', 'ensure-build.mjs')], { cwd: root });
    const state = readState(stateDir);
    const rec = state === null ? undefined : replicationRecord(state);
    const appEnv = state?.servers[0]?.env;
    const throughPgbouncer = appEnv === undefined ? undefined : envValue(appEnv, 'DATABASE_URL');
    if (state === null || rec === undefined || appEnv === undefined || throughPgbouncer === undefined)
      throw new Error(`no scale stack in ${stateDir}`);
    const replicas = envValue(appEnv, 'DATABASE_REPLICA_URLS') ?? '';
    await run(process.execPath, [join(root, 'dist', 'cli', 'seed.js')], {
      cwd: root,
      env: {
        ...process.env,
        NODE_ENV: 'production',
        DATABASE_URL: throughPgbouncer,
        JWT_SECRET: 'x'.repeat(48),
      },
    });
    const base = {
      NODE_ENV: 'production',
      LOG_LEVEL: 'warn',
      JWT_SECRET: randomBytes(48).toString('base64'),
      CACHE_ENABLED: 'false',
      RATE_LIMIT_MAX: '100000000',
      DATABASE_BUDGET_CHECK: 'off',
    };
    const targets: Array<{ name: string; env: Record<string, string> }> = [
      { name: 'replica', env: { DATABASE_URL: throughPgbouncer, DATABASE_REPLICA_URLS: replicas } },
      { name: 'primary-pgbouncer', env: { DATABASE_URL: throughPgbouncer } },
      { name: 'primary-direct', env: { DATABASE_URL: roleUrl(rec, rec.primary, 'app') } },
    ];
    for (const t of targets) {
      const metricsPort = await freePort();
      const server = await startServer({
        name: t.name,
        port: await freePort(),
        command: process.execPath,
        args: [join(root, 'dist', 'main.js')],
        env: { ...base, ...t.env, METRICS_PORT: String(metricsPort) },
        core: serverCore,
        logFile: join(work, `${t.name}.log`),
        readyPath: '/ready',
      });
      servers.push({ ...server, metricsPort });
    }
    const load = (server: Server, seconds: number) =>
      runLoad({ port: server.port, paths, connections, durationSeconds: seconds, core: loadCore });
    // Warm-up (a smoke run only proves that it runs: its one round is the warm-up too).
    if (!smoke) for (const server of servers) await load(server, 3);
    const rps: number[][] = servers.map(() => []);
    const p99: number[][] = servers.map(() => []);
    for (let round = 0; round < rounds; round++) {
      for (const [i, server] of servers.entries()) {
        const result = await load(server, duration);
        if (result.errors > 0 || result.non2xx > 0)
          throw new Error(`${server.name}: ${result.errors} errors, ${result.non2xx} non-2xx responses`);
        rps[i]?.push(result.rps);
        p99[i]?.push(result.p99Ms);
      }
      log(
        `round ${round + 1}: ${servers.map((s, i) => `${s.name} ${rps[i]?.at(-1)?.toFixed(0)} req/s`).join(', ')}`,
      );
    }
    const onReplica = await replicaReads(servers[0] as Server & { metricsPort: number });
    if (onReplica === 0) throw new Error('the replica target served no read from the replica');
    const othersOnReplica = (await Promise.all(servers.slice(1).map(replicaReads))).reduce(
      (a, b) => a + b,
      0,
    );
    if (othersOnReplica > 0) throw new Error('a primary target read from the replica');

    const lines = [
      `Catalog reads (${paths.length} list queries, cache off), ${rounds} interleaved rounds of ${duration} s, ${connections} connections:`,
      '',
      '| target | req/s (median, range) | p99 ms (median) | ratio to replica per round (median, range) |',
      '|---|---|---|---|',
      ...servers.map((s, i) => {
        const mine = rps[i] ?? [];
        const ratios = mine.map((r, round) => r / (rps[0]?.[round] ?? 1));
        return `| ${s.name} | ${median(mine).toFixed(0)} (${Math.min(...mine).toFixed(0)}–${Math.max(...mine).toFixed(0)}) | ${median(p99[i] ?? []).toFixed(1)} | ${median(ratios).toFixed(2)} (${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)}) |`;
      }),
      '',
      `The replica target's reads on the replica: ${onReplica} (db_replica_reads_total).`,
    ];
    console.log(lines.join('\n'));
    if (flags.out !== undefined) {
      const stamp = new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19);
      writeFileSync(join(flags.out, `replicas-${stamp}.md`), `${lines.join('\n')}\n`);
      writeFileSync(
        join(flags.out, `replicas-${stamp}.json`),
        `${JSON.stringify({ duration, rounds, connections, paths, targets: servers.map((s, i) => ({ name: s.name, rps: rps[i], p99: p99[i] })) }, null, 2)}\n`,
      );
    }
  } finally {
    for (const server of servers) await server.stop();
    if (ownStateDir !== undefined) await down(ownStateDir, (line) => log(line)).catch((e) => log(String(e)));
    rmSync(work, { recursive: true, force: true });
  }
}

try {
  await main();
} catch (err) {
  console.error(`bench:replicas: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  process.exitCode = 1;
}
