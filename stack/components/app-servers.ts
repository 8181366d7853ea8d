import { execFile, spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { clusterPolicyVariable } from '../../src/cli/pm2-policy.js';
import { secretsToFiles } from '../secrets.js';
import type { Component, ServerRecord, StackState } from '../types.js';
import { freePort, freePortRange, httpGet, isAlive, killAndWait, waitFor } from '../util.js';

const run = promisify(execFile);

export interface ServerSpec {
  readonly name: string;
  readonly role?: 'primary' | 'backup';
  readonly weight?: number;
  /** Loopback address of its own, so each "host" is distinct (all of 127/8 is loopback). */
  readonly host: string;
}

function pm2Bin(root: string): string {
  return join(root, 'node_modules', 'pm2', 'bin', 'pm2');
}

function pm2Env(server: ServerRecord): NodeJS.ProcessEnv {
  return {
    ...process.env,
    ...server.env,
    PM2_HOME: server.pm2Home ?? '',
    PM2_LOG_DIR: join(server.pm2Home ?? '', '..', 'logs'),
    PM2_APP_NAME: server.name,
    PM2_INSTANCES: String(server.instances),
    HOST: server.host,
    PORT: String(server.port),
    METRICS_PORT: String(server.metricsPort),
    // Never the caller's PM2 daemon.
    PM2_SILENT: 'true',
    // A daemon launched here lets the workers accept connections themselves (decision 0095), as
    // `npm run pm2:start` does; with round-robin a worker's death can strand a connection.
    [clusterPolicyVariable]: 'none',
  };
}

export function pm2(root: string, server: ServerRecord, ...args: string[]) {
  return run(process.execPath, [pm2Bin(root), ...args], {
    env: pm2Env(server),
    cwd: root,
    timeout: 180_000,
  });
}

/**
 * `npm run pm2:start|pm2:reload` (src/cli/pm2.ts, issue 21's wrapper) with the server's PM2_HOME:
 * it refuses a configuration the service would reject before PM2 is touched, and succeeds only
 * when every worker answers /ready.
 */
async function pm2Wrapper(root: string, server: ServerRecord, command: 'start' | 'reload') {
  try {
    await run(process.execPath, [join(root, 'dist', 'cli', 'pm2.js'), command], {
      env: pm2Env(server),
      cwd: root,
      timeout: 180_000,
    });
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    throw new Error(`${server.name}: pm2 ${command} failed: ${e.stderr || e.stdout || e.message}`);
  }
}

export function serverUrl(server: ServerRecord): string {
  return `http://${server.host}:${server.port}`;
}

function readPid(path: string): number | null {
  try {
    const pid = Number(readFileSync(path, 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

/** Live worker pids, from PM2's pid files (no PM2 round trip, so `status` stays fast). */
export function serverPids(server: ServerRecord): number[] {
  if (server.pm2Home === null) return isAlive(server.pid) ? [server.pid as number] : [];
  const dir = join(server.pm2Home, 'pids');
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => f.endsWith('.pid'))
    .map((f) => readPid(join(dir, f)))
    .filter((pid): pid is number => isAlive(pid));
}

/** The PM2 daemon's pid (it restarts crashed workers, so a "dead server" needs it gone too). */
export function pm2DaemonPid(server: ServerRecord): number | null {
  if (server.pm2Home === null) return null;
  const pid = readPid(join(server.pm2Home, 'pm2.pid'));
  return isAlive(pid) ? pid : null;
}

/** Waits until the server answers /ready (and, under PM2, all its workers are up). */
export async function waitUntilServing(server: ServerRecord, timeoutMs = 120_000): Promise<void> {
  await waitFor(
    `${server.name} to answer ${serverUrl(server)}/ready`,
    async () => {
      if (server.pm2Home !== null && serverPids(server).length < server.instances) return false;
      return (await httpGet(`${serverUrl(server)}/ready`)).status === 200;
    },
    timeoutMs,
  );
}

/** Starts (or restarts, after a kill) one recorded server. */
export async function startServer(root: string, server: ServerRecord, logDir: string): Promise<void> {
  if (server.pm2Home !== null) {
    mkdirSync(server.pm2Home, { recursive: true });
    await pm2(
      root,
      server,
      'start',
      join(root, 'deploy', 'pm2', 'ecosystem.config.cjs'),
      '--env',
      'production',
    );
  } else {
    mkdirSync(logDir, { recursive: true });
    const out = openSync(join(logDir, `${server.name}.log`), 'a');
    const child = spawn(process.execPath, [join(root, 'dist', 'main.js')], {
      cwd: root,
      env: {
        ...process.env,
        ...server.env,
        HOST: server.host,
        PORT: String(server.port),
        METRICS_PORT: String(server.metricsPort),
      },
      stdio: ['ignore', out, out],
      detached: true,
    });
    closeSync(out);
    child.unref();
    server.pid = child.pid ?? null;
  }
  await waitUntilServing(server);
}

/** kill -9 of every process of the server, its PM2 daemon first (so nothing restarts it). */
export async function killServer(server: ServerRecord): Promise<void> {
  const daemon = pm2DaemonPid(server);
  const pids = [...(daemon === null ? [] : [daemon]), ...serverPids(server)];
  await killAndWait(pids);
  if (server.pm2Home !== null) {
    for (const f of ['rpc.sock', 'pub.sock', 'pm2.pid']) rmSync(join(server.pm2Home, f), { force: true });
    rmSync(join(server.pm2Home, 'pids'), { recursive: true, force: true });
  }
}

/**
 * `npm run pm2:reload` for one server: a new worker per instance, each taking over on `ready`
 * (lossless with the drain); the wrapper checks the configuration first and waits for /ready.
 */
export async function reloadServer(root: string, server: ServerRecord): Promise<void> {
  if (server.pm2Home === null) throw new Error(`${server.name} is a single process; it has no reload`);
  await pm2Wrapper(root, server, 'reload');
  await waitUntilServing(server);
}

async function stopServer(root: string, server: ServerRecord): Promise<void> {
  if (server.pm2Home !== null) {
    if (pm2DaemonPid(server) !== null) await pm2(root, server, 'kill').catch(() => {});
    // Whatever survived `pm2 kill` (or a daemon already gone) is killed outright.
    const left = [...serverPids(server), ...[pm2DaemonPid(server)].filter((p): p is number => p !== null)];
    if (left.length > 0) await killAndWait(left);
  } else if (isAlive(server.pid)) {
    await killAndWait([server.pid as number], 'SIGTERM').catch(() => killAndWait([server.pid as number]));
  }
}

/**
 * App servers: each a PM2 cluster of its own (own PM2_HOME, port and metrics ports), or — with
 * `pm2: false` (the prototype) — one plain `node dist/main.js` process. Each server's environment is
 * the stack's `appEnv` as it stands when this component starts (DATABASE_URL, REDIS_URL, …), plus
 * `env` here, plus the caller's `appEnv` option.
 */
export function appServers(options: {
  servers: readonly ServerSpec[];
  pm2: boolean;
  instances: number;
  env?: Readonly<Record<string, string>>;
  /** The first server takes the stack's given entry port (stages without an edge). */
  entryPortFromOptions?: boolean;
}): Component {
  return {
    name: 'servers',
    async up(ctx) {
      const instances = ctx.options.instances ?? options.instances;
      // The migrations' owner credentials are the deploy's, never the running service's.
      const { DATABASE_MIGRATION_URL: _owner, ...serviceEnv } = {
        ...ctx.appEnv,
        ...options.env,
        ...ctx.options.appEnv,
      };
      const env = secretsToFiles(serviceEnv, join(ctx.state.stateDir, 'servers', 'secrets'));
      const records: ServerRecord[] = [];
      for (const [i, spec] of options.servers.entries()) {
        const port =
          i === 0 && options.entryPortFromOptions && ctx.options.port !== undefined
            ? ctx.options.port
            : await freePort(spec.host);
        const count = options.pm2 ? instances : 1;
        const record: ServerRecord = {
          name: spec.name,
          role: spec.role ?? 'primary',
          weight: spec.weight ?? 1,
          host: spec.host,
          port,
          // Room for every worker an autoscaler may add (METRICS_PORT + instance number).
          metricsPort: await freePortRange(Math.max(count, ctx.options.autoscale?.max ?? 0), spec.host),
          instances: count,
          pm2Home: options.pm2 ? join(ctx.state.stateDir, 'servers', spec.name, 'pm2') : null,
          pid: null,
          env,
        };
        records.push(record);
        ctx.state.servers.push(record);
        ctx.log(
          `${spec.name}: starting ${options.pm2 ? `a PM2 cluster of ${count}` : 'one process'} on ${serverUrl(record)}`,
        );
      }
      ctx.save();
      // In parallel: each server is its own "machine"; the wait is mostly for boots and /ready.
      const started = await Promise.allSettled(
        records.map((r) => startServer(ctx.root, r, join(ctx.state.stateDir, 'logs'))),
      );
      ctx.save();
      const failed = started.find((r) => r.status === 'rejected');
      if (failed !== undefined) throw (failed as PromiseRejectedResult).reason;
      if (ctx.state.entry === null && ctx.state.servers[0] !== undefined)
        ctx.state.entry = serverUrl(ctx.state.servers[0]);
      ctx.save();
    },
    async down(state: StackState, log) {
      for (const server of [...state.servers].reverse()) {
        await stopServer(state.root, server);
        log(`${server.name}: stopped`);
      }
    },
  };
}
