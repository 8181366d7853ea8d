import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { send } from '../support/load.js';

const run = promisify(execFile);
const root = new URL('../..', import.meta.url).pathname;
const pm2Bin = join(root, 'node_modules', 'pm2', 'bin', 'pm2');
const ecosystem = join(root, 'deploy', 'pm2', 'ecosystem.config.cjs');

export interface Pm2Worker {
  readonly pid: number;
  readonly instance: number;
  readonly status: string;
  readonly restarts: number;
}

export interface Pm2Cluster {
  readonly port: number;
  readonly metricsPort: number;
  readonly logDir: string;
  workers(): Promise<Pm2Worker[]>;
  /** `pm2 reload`: replaces the workers one by one; resolves when PM2 says it is done. */
  reload(): Promise<void>;
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
  const env = {
    ...process.env,
    ...options.env,
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

  const cluster: Pm2Cluster = {
    port: options.port,
    metricsPort: options.metricsPort,
    logDir,
    async workers() {
      const { stdout } = await pm2('jlist');
      const list = JSON.parse(stdout.slice(stdout.indexOf('['))) as Array<{
        pid: number;
        pm2_env: { status: string; NODE_APP_INSTANCE?: number; restart_time: number };
      }>;
      return list.map((p) => ({
        pid: p.pid,
        instance: Number(p.pm2_env.NODE_APP_INSTANCE ?? -1),
        status: p.pm2_env.status,
        restarts: p.pm2_env.restart_time,
      }));
    },
    async reload() {
      await pm2('reload', name);
    },
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
    await pm2('start', ecosystem, '--env', 'production');
    await cluster.waitUntilServing();
  } catch (err) {
    await cluster.destroy();
    throw err;
  }
  return cluster;
}
