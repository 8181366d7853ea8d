import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { killServer, reloadServer, serverPids, serverUrl, startServer } from './components/app-servers.js';
import {
  autoscaledServers,
  autoscaler,
  autoscalerPids,
  lastDecision,
  monitoredMetricsUrls,
} from './components/autoscaler.js';
import { monitoringPids } from './components/monitoring.js';
import { nginxPid } from './components/nginx.js';
import { pgbouncerPids } from './components/pgbouncer.js';
import { redisPids } from './components/redis.js';
import { replicaHealth, replicationPids } from './components/replicated-postgres.js';
import { stages } from './stages.js';
import type {
  Component,
  ServerRecord,
  StackContext,
  StackOptions,
  StackState,
  StackStatus,
  StageName,
} from './types.js';

const run = promisify(execFile);
export const projectRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const defaultStateDir = join(projectRoot, '.stack');

export class StackError extends Error {}

const stateFile = (dir: string) => join(dir, 'state.json');

export function readState(stateDir: string): StackState | null {
  const path = stateFile(resolve(stateDir));
  if (!existsSync(path)) return null;
  return JSON.parse(readFileSync(path, 'utf8')) as StackState;
}

function saveState(state: StackState): void {
  // Private: it holds the servers' environment (JWT secret, database URLs).
  writeFileSync(stateFile(state.stateDir), `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
}

/**
 * The stage's components, plus those an option adds (`--autoscale` after the servers and the edge,
 * before the monitoring, which scrapes the monitors' own /metrics). `down` and `status` rebuild
 * the same list from what the state says was started.
 */
function componentsOf(stage: StageName, autoscale: StackOptions['autoscale'] | StackState): Component[] {
  const base = stages[stage].components();
  if (autoscale === undefined) return base;
  let options: StackOptions['autoscale'];
  if ('started' in autoscale) {
    const rec = autoscale.components.autoscaler as { min: number; max: number; args: string[] } | undefined;
    if (!autoscale.started.includes('autoscaler') || rec === undefined) return base;
    options = { min: rec.min, max: rec.max, extraArgs: rec.args };
  } else options = autoscale;
  const at = base.findIndex((c) => c.name === 'monitoring');
  const scaler = autoscaler(options);
  return at < 0 ? [...base, scaler] : [...base.slice(0, at), scaler, ...base.slice(at)];
}

/** Every process the stack started that should be alive. */
function processes(state: StackState): { expected: number; alive: number[] } {
  let expected = 0;
  const alive: number[] = [];
  const autoscaled = new Set(autoscaledServers(state).map((s) => s.name));
  for (const server of state.servers) {
    // A deploy target serves only once a release is current.
    if (server.deployDir !== undefined && !existsSync(join(server.deployDir, 'current'))) continue;
    const pids = serverPids(server);
    // An autoscaled server's count moves: running means at least one worker.
    expected += autoscaled.has(server.name) ? Math.max(1, pids.length) : server.instances;
    alive.push(...pids);
  }
  if (autoscaled.size > 0) {
    expected += autoscaled.size;
    alive.push(...autoscalerPids(state));
  }
  if (state.nginx !== null) {
    expected += 1;
    const pid = nginxPid(state.nginx);
    if (pid !== null) alive.push(pid);
  }
  if (state.components.redis !== undefined) {
    expected += 1;
    alive.push(...redisPids(state));
  }
  for (const part of [replicationPids(state), pgbouncerPids(state)]) {
    expected += part.expected;
    alive.push(...part.alive);
  }
  const monitored = monitoringPids(state);
  expected += monitored.expected;
  alive.push(...monitored.alive);
  return { expected, alive };
}

export function statusOf(state: StackState): StackStatus {
  const { expected, alive } = processes(state);
  const components: Record<string, unknown> = {};
  for (const component of componentsOf(state.stage, state)) {
    if (component.status !== undefined && state.started.includes(component.name))
      components[component.name] = component.status(state);
  }
  return {
    stage: state.stage,
    running: alive.length === expected && expected > 0,
    stateDir: state.stateDir,
    startedAt: state.startedAt,
    entry: state.entry ?? '',
    caFile: state.caFile,
    servers: state.servers.map((s) => ({
      name: s.name,
      role: s.role,
      weight: s.weight,
      url: serverUrl(s),
      metricsUrls:
        monitoredMetricsUrls(state, s.name) ??
        Array.from({ length: s.instances }, (_, i) => `http://${s.host}:${s.metricsPort + i}/metrics`),
      pids: serverPids(s),
      workers: serverPids(s).length,
      autoscale: lastDecision(state, s.name),
    })),
    databases: state.databases.map((d, i) =>
      d.role === 'replica'
        ? {
            ...d,
            replication: replicaHealth(
              state,
              state.databases.slice(0, i).filter((e) => e.role === 'replica').length,
            ),
          }
        : d,
    ),
    redis: state.redis,
    nginx:
      state.nginx === null
        ? null
        : {
            pid: nginxPid(state.nginx),
            config: state.nginx.config,
            accessLog: state.nginx.accessLog,
            errorLog: state.nginx.errorLog,
          },
    components,
  };
}

export function status(stateDir: string): StackStatus | null {
  const state = readState(stateDir);
  return state === null ? null : statusOf(state);
}

function writeSecret(stateDir: string, name: string, value: string): string {
  const dir = join(stateDir, 'secrets');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFileSync(join(dir, name), value, { mode: 0o600 });
  return join(dir, name);
}

/** Starts a stage. Refuses when a stack already lives in the state directory. */
export async function up(stage: StageName, options: StackOptions): Promise<StackStatus> {
  const log = options.log ?? (() => {});
  const stateDir = resolve(options.stateDir);
  const existing = readState(stateDir);
  if (existing !== null) {
    const running = statusOf(existing).running ? 'running' : 'partly stopped';
    throw new StackError(
      `a ${existing.stage} stack already exists in ${stateDir} (${running}); stop it first: npm run stack -- down${
        stateDir === defaultStateDir ? '' : ` --state-dir ${stateDir}`
      }`,
    );
  }
  mkdirSync(stateDir, { recursive: true });
  // nginx workers (nobody) traverse it to reach their temp directory.
  chmodSync(stateDir, 0o755);
  const state: StackState = {
    stage,
    stateDir,
    root: projectRoot,
    startedAt: new Date().toISOString(),
    entry: null,
    caFile: null,
    databases: [],
    redis: null,
    servers: [],
    nginx: null,
    components: {},
    started: [],
  };
  saveState(state);
  const ctx: StackContext = {
    stage,
    root: projectRoot,
    options,
    state,
    appEnv: {
      NODE_ENV: 'production',
      // One key for every server of the stack (a token from one is valid on all), in a file: PM2
      // must never hold a secret in its environment (it would write it into its dump).
      JWT_SECRET_FILE: writeSecret(stateDir, 'jwt-secret', randomBytes(48).toString('base64')),
      LOG_LEVEL: 'info',
      // Short drains: the stack is for trying and testing, not for slow clients.
      SHUTDOWN_GRACE_MS: '1000',
      SHUTDOWN_TIMEOUT_MS: '10000',
      ...(options.publicDir === undefined ? {} : { STATIC_DIR: resolve(options.publicDir) }),
    },
    log,
    save: () => saveState(state),
  };
  log(`stack: building dist/ if the sources changed`);
  await run(process.execPath, [join(projectRoot, 'scripts', 'ensure-build.mjs')], { cwd: projectRoot });
  try {
    for (const component of componentsOf(stage, options.autoscale)) {
      if (component.enabled !== undefined && !component.enabled(options)) continue;
      // Recorded before it starts, so a half-started component is cleaned up too.
      state.started.push(component.name);
      saveState(state);
      await component.up(ctx);
    }
  } catch (err) {
    log(`stack: start-up failed (${err instanceof Error ? err.message : String(err)}); cleaning up`);
    await down(stateDir, log).catch((e: unknown) => log(`stack: cleanup failed too: ${String(e)}`));
    throw err;
  }
  saveState(state);
  return statusOf(state);
}

/** Stops everything the stack started, in reverse order, and removes the state directory. */
export async function down(stateDir: string, log: (line: string) => void = () => {}): Promise<boolean> {
  const state = readState(stateDir);
  if (state === null) return false;
  const components = componentsOf(state.stage, state);
  const problems: string[] = [];
  for (const name of [...state.started].reverse()) {
    const component = components.find((c) => c.name === name);
    try {
      await component?.down(state, log);
    } catch (err) {
      problems.push(`${name}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  if (problems.length > 0) {
    saveState(state);
    throw new StackError(
      `could not stop everything (state kept in ${state.stateDir}):\n  ${problems.join('\n  ')}`,
    );
  }
  rmSync(state.stateDir, { recursive: true, force: true });
  return true;
}

function findServer(state: StackState, name: string): ServerRecord {
  const server = state.servers.find((s) => s.name === name);
  if (server === undefined)
    throw new StackError(
      `no server "${name}" in this stack (${state.servers.map((s) => s.name).join(', ')})`,
    );
  return server;
}

/** Operations on one app server of a running stack (for failover drills and the tests). */
export async function serverAction(stateDir: string, name: string, action: 'kill' | 'start' | 'reload') {
  const state = readState(stateDir);
  if (state === null) throw new StackError(`no stack in ${resolve(stateDir)}`);
  const server = findServer(state, name);
  if (action === 'kill') await killServer(server);
  else if (action === 'start') {
    if (serverPids(server).length > 0) throw new StackError(`${name} is running`);
    await startServer(state.root, server, join(state.stateDir, 'logs'));
    saveState(state);
  } else await reloadServer(state.root, server);
}
