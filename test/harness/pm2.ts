import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { send } from '../support/load.js';

const run = promisify(execFile);
const root = new URL('../..', import.meta.url).pathname;
const pm2Bin = join(root, 'node_modules', 'pm2', 'bin', 'pm2');
/** The operator's entry point (npm run pm2:start / pm2:reload), built: src/cli/pm2.ts. */
const wrapper = join(root, 'dist', 'cli', 'pm2.js');

export interface WrapperResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface Pm2Worker {
  /** The PM2 app: the API (`shipshape-test`) or the job worker (`shipshape-test-worker`). */
  readonly name: string;
  readonly pid: number;
  readonly instance: number;
  readonly status: string;
  readonly restarts: number;
}

export interface Pm2Cluster {
  readonly port: number;
  readonly metricsPort: number;
  readonly logDir: string;
  /** The cluster's private PM2_HOME (dump.pm2 lives there after `pm2 save`). */
  readonly home: string;
  /** The API app's PM2 name; the job worker app (PM2_JOBS_WORKER=true) is `<name>-worker`. */
  readonly name: string;
  /** Runs the PM2 CLI against this cluster's daemon. */
  pm2(...args: string[]): Promise<{ stdout: string }>;
  /** The API app's processes. */
  workers(): Promise<Pm2Worker[]>;
  /** Every process the daemon runs, of every app. */
  processes(): Promise<Pm2Worker[]>;
  /** `npm run pm2:reload`: replaces the workers one by one; resolves when every worker is ready. */
  reload(): Promise<void>;
  /** Runs the wrapper (`start` or `reload`) with some variables changed; never throws. */
  wrapper(command: 'start' | 'reload', changes: Record<string, string | undefined>): Promise<WrapperResult>;
  /** Waits until `instances` workers are online and the service answers /ready. */
  waitUntilServing(timeoutMs?: number): Promise<void>;
  destroy(): Promise<void>;
}

/** Compiles dist/ if the sources are newer (PM2 runs the built service, as in production). */
export async function ensureBuilt(): Promise<void> {
  await run(process.execPath, [join(root, 'scripts', 'ensure-build.mjs')], { cwd: root });
}

/**
 * Starts the shipped ecosystem file under a PM2 daemon of our own (its own PM2_HOME), so tests
 * never touch an operator's PM2.
 */
export async function startPm2Cluster(options: {
  env: Record<string, string>;
  instances: number;
  port: number;
  metricsPort: number;
}): Promise<Pm2Cluster> {
  await ensureBuilt();
  const home = mkdtempSync(join(tmpdir(), 'shipshape-pm2-'));
  const logDir = join(home, 'logs');
  const name = 'shipshape-test';
  // Secrets go to PM2 as *_FILE, as in production: the wrapper refuses them in plain text.
  const given: Record<string, string> = { ...options.env };
  for (const name of ['JWT_SECRET', 'METRICS_TOKEN', 'DATABASE_REPLICA_URLS']) {
    const value = given[name];
    if (value === undefined) continue;
    const file = join(home, name.toLowerCase());
    writeFileSync(file, value, { mode: 0o600 });
    delete given[name];
    given[`${name}_FILE`] = file;
  }
  const env: Record<string, string | undefined> = {
    ...process.env,
    ...given,
    PM2_HOME: home,
    PM2_LOG_DIR: logDir,
    PM2_APP_NAME: name,
    PM2_INSTANCES: String(options.instances),
    PORT: String(options.port),
    METRICS_PORT: String(options.metricsPort),
    HOST: '127.0.0.1',
  };
  const pm2 = (...args: string[]) =>
    run(process.execPath, [pm2Bin, ...args], { env, cwd: root, timeout: 120_000 });
  const runWrapper = async (
    command: 'start' | 'reload',
    changes: Record<string, string | undefined> = {},
  ): Promise<WrapperResult> => {
    const childEnv = { ...env, ...changes };
    for (const [k, v] of Object.entries(changes)) if (v === undefined) delete childEnv[k];
    try {
      const { stdout, stderr } = await run(process.execPath, [wrapper, command], {
        env: childEnv,
        cwd: root,
        timeout: 180_000,
      });
      return { code: 0, stdout, stderr };
    } catch (err) {
      const e = err as { code?: number; stdout?: string; stderr?: string };
      return {
        code: typeof e.code === 'number' ? e.code : 1,
        stdout: e.stdout ?? '',
        stderr: e.stderr ?? '',
      };
    }
  };

  const cluster: Pm2Cluster = {
    port: options.port,
    metricsPort: options.metricsPort,
    logDir,
    home,
    name,
    pm2,
    async workers() {
      return (await cluster.processes()).filter((p) => p.name === name);
    },
    async processes() {
      const { stdout } = await pm2('jlist');
      const list = JSON.parse(stdout.slice(stdout.indexOf('['))) as Array<{
        name: string;
        pid: number;
        pm2_env: { status: string; NODE_APP_INSTANCE?: number; restart_time: number };
      }>;
      return list.map((p) => ({
        name: p.name,
        pid: p.pid,
        instance: Number(p.pm2_env.NODE_APP_INSTANCE ?? -1),
        status: p.pm2_env.status,
        restarts: p.pm2_env.restart_time,
      }));
    },
    async reload() {
      const result = await runWrapper('reload');
      if (result.code !== 0) throw new Error(`pm2:reload exited ${result.code}: ${result.stderr}`);
    },
    wrapper: runWrapper,
    async waitUntilServing(timeoutMs = 60_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const online = (await cluster.workers()).filter((w) => w.status === 'online').length;
        if (online === options.instances) {
          try {
            if ((await send(options.port, { method: 'GET', path: '/ready' })).status === 200) return;
          } catch {
            // not listening yet
          }
        }
        if (Date.now() > deadline) throw new Error(`PM2 cluster not serving after ${timeoutMs} ms`);
        await sleep(200);
      }
    },
    async destroy() {
      await pm2('kill').catch(() => {});
      rmSync(home, { recursive: true, force: true });
    },
  };

  try {
    const started = await runWrapper('start');
    if (started.code !== 0)
      throw new Error(`pm2:start exited ${started.code}: ${started.stdout}${started.stderr}`);
    await cluster.waitUntilServing();
  } catch (err) {
    await cluster.destroy();
    throw err;
  }
  return cluster;
}
