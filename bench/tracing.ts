#!/usr/bin/env node
/**
 * `npm run bench:tracing` — what OpenTelemetry costs on the hot path: GET /api/products/:id (warm,
 * SQLite, in-process cache) against the built service with TRACING_ENABLED=false and =true (spans
 * made, sampled, no exporter), and — with `--baseline DIR`, a built checkout of the code before
 * tracing existed — against that. Runs alternate (A, B, C, A, B, C, …) so drift of a shared machine
 * hits every target alike; the medians are printed as ratios.
 *
 *   npm run bench:tracing -- --duration 5 --rounds 3 [--baseline /tmp/before]
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { freePort } from '../test/harness/ports.js';
import { runLoad } from './lib/load.js';
import { startServer } from './lib/processes.js';

const run = promisify(execFile);
const root = new URL('..', import.meta.url).pathname;
const { values: flags } = parseArgs({
  options: {
    duration: { type: 'string', default: '5' },
    rounds: { type: 'string', default: '3' },
    connections: { type: 'string', default: '20' },
    baseline: { type: 'string' },
  },
});
const duration = Number(flags.duration);
const rounds = Number(flags.rounds);
const connections = Number(flags.connections);
const serverCore = 0;
const loadCore = availableParallelism() > 1 ? 1 : undefined;

interface Target {
  readonly name: string;
  readonly dir: string;
  readonly env: Record<string, string>;
}

const targets: Target[] = [
  ...(flags.baseline === undefined ? [] : [{ name: 'before tracing existed', dir: flags.baseline, env: {} }]),
  { name: 'TRACING_ENABLED=false', dir: root, env: { TRACING_ENABLED: 'false' } },
  { name: 'TRACING_ENABLED=true (no exporter)', dir: root, env: { TRACING_ENABLED: 'true' } },
];

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? 0;

async function main(): Promise<void> {
  await run(process.execPath, [join(root, 'scripts', 'ensure-build.mjs')], { cwd: root });
  const dir = mkdtempSync(join(tmpdir(), 'shipshape-bench-tracing-'));
  const results = new Map<string, { rps: number[]; p99: number[] }>();
  try {
    for (let round = 0; round < rounds; round++) {
      for (const target of targets) {
        const sqlite = join(dir, `${round}-${targets.indexOf(target)}.db`);
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
          const list = (await (await fetch(`http://127.0.0.1:${port}/api/products?limit=1`)).json()) as {
            items: Array<{ id: string }>;
          };
          const paths = [`/api/products/${list.items[0]?.id}`];
          await runLoad({ port, paths, connections, durationSeconds: 1, core: loadCore });
          const result = await runLoad({
            port,
            paths,
            connections,
            durationSeconds: duration,
            core: loadCore,
          });
          if (result.errors > 0 || result.non2xx > 0)
            throw new Error(`${target.name}: ${result.errors} errors, ${result.non2xx} non-2xx`);
          const entry = results.get(target.name) ?? { rps: [], p99: [] };
          entry.rps.push(result.rps);
          entry.p99.push(result.p99Ms);
          results.set(target.name, entry);
          console.log(
            `round ${round + 1} ${target.name}: ${result.rps.toFixed(0)} req/s, p99 ${result.p99Ms.toFixed(2)} ms`,
          );
        } finally {
          await server.stop();
        }
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const off = results.get('TRACING_ENABLED=false');
  console.log(`\n${rounds} rounds × ${duration} s, ${connections} connections, medians:`);
  for (const [name, r] of results) {
    const ratio =
      off === undefined ? '' : ` (${((median(r.rps) / median(off.rps)) * 100).toFixed(1)} % of tracing off)`;
    console.log(`  ${name}: ${median(r.rps).toFixed(0)} req/s${ratio}, p99 ${median(r.p99).toFixed(2)} ms`);
  }
}

await main();
