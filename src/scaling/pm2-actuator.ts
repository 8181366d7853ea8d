import { existsSync, readFileSync } from 'node:fs';
import { request } from 'node:http';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Actuator } from './autoscaler.js';
import type { ScrapedInstance } from './samplers.js';

/**
 * PM2 as an actuator (docs/decisions/0081-autoscale-process-and-actuators.md): absolute worker
 * counts through PM2's programmatic API (`scale(name, n)`; relative '-N' is broken in pm2 7, and
 * the same number is an error PM2 calls "Same process number", here a no-op). PM2 adds a worker
 * by duplicating one (the lowest free NODE_APP_INSTANCE, so its metrics port is METRICS_PORT + that
 * number) and removes one through its normal stop path: SIGINT, the service's drain, SIGKILL after
 * kill_timeout — the same path a reload takes, which loses no request. A change is done when PM2
 * lists exactly that many workers online and every one answers /ready on its metrics port.
 */

export interface Pm2Process {
  name: string;
  pid: number;
  pm_id: number;
  pm2_env: { status: string; NODE_APP_INSTANCE?: number; pm_uptime?: number };
}

interface Pm2Client {
  connect(cb: (err: Error | null) => void): void;
  list(cb: (err: Error | null, list: Pm2Process[]) => void): void;
  scale(name: string, count: number, cb: (err: Error | null) => void): void;
  disconnect(): void;
}

type Pm2Constructor = new (options: { pm2_home: string }) => Pm2Client;

const requireCjs = createRequire(import.meta.url);

function get(url: string): Promise<number> {
  return new Promise((resolve) => {
    const req = request(url, { method: 'GET', timeout: 5000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.once('timeout', () => req.destroy(new Error('timed out')));
    req.once('error', () => resolve(0));
    req.end();
  });
}

function daemonAlive(pm2Home: string): boolean {
  const file = join(pm2Home, 'pm2.pid');
  if (!existsSync(file)) return false;
  const pid = Number(readFileSync(file, 'utf8').trim());
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * The app's workers that count: online ones only. A change is done when all of them are online
 * (settled), so counting a launching, stopping or errored worker would make the policy see a
 * count the change never reached — and a worker that is not online serves nothing.
 */
export function onlineWorkers(
  processes: readonly Pm2Process[],
  metricsHost: string,
  metricsPort: number,
): ScrapedInstance[] {
  return processes
    .filter((p) => p.pm2_env.status === 'online')
    .map((p) => {
      const instance = Number(p.pm2_env.NODE_APP_INSTANCE ?? 0);
      return {
        id: `${instance}:${p.pid}`,
        startedAt: p.pm2_env.pm_uptime ?? 0,
        metricsUrl: `http://${metricsHost}:${metricsPort + instance}/metrics`,
      };
    });
}

export function pm2Actuator(options: {
  /** The PM2_HOME of the daemon that runs the app (never starts one of its own). */
  pm2Home: string;
  app: string;
  /** Where the workers serve /metrics and /ready: METRICS_PORT + NODE_APP_INSTANCE on this host. */
  metricsHost: string;
  metricsPort: number;
  /** How long new workers may take to answer /ready (the ecosystem's listen_timeout + margin). */
  readyTimeoutMs?: number;
}): Actuator {
  const Custom = (requireCjs('pm2') as { custom: Pm2Constructor }).custom;
  let client: Pm2Client | null = null;
  let connected: Promise<Pm2Client> | null = null;
  const connect = () => {
    connected ??= new Promise<Pm2Client>((resolve, reject) => {
      // PM2's connect() launches a daemon when none answers: an autoscaler must not start a second PM2.
      if (!daemonAlive(options.pm2Home)) {
        connected = null;
        reject(new Error(`no PM2 daemon in ${options.pm2Home}: start the app first (npm run pm2:start)`));
        return;
      }
      const c = new Custom({ pm2_home: options.pm2Home });
      c.connect((err) => {
        if (err) {
          connected = null;
          reject(err);
        } else {
          client = c;
          resolve(c);
        }
      });
    });
    return connected;
  };
  const list = async () => {
    const c = await connect();
    const all = await new Promise<Pm2Process[]>((resolve, reject) =>
      c.list((err, processes) => (err ? reject(err) : resolve(processes))),
    );
    return all.filter((p) => p.name === options.app);
  };
  async function settled(count: number): Promise<void> {
    const deadline = Date.now() + (options.readyTimeoutMs ?? 60_000);
    let waiting = '';
    while (Date.now() < deadline) {
      const procs = await list();
      const online = procs.filter((p) => p.pm2_env.status === 'online');
      waiting =
        procs.length !== count || online.length !== count
          ? `${online.length}/${procs.length} online, want ${count}`
          : '';
      if (waiting === '') {
        const ready = await Promise.all(
          online.map((p) =>
            get(
              `http://${options.metricsHost}:${options.metricsPort + Number(p.pm2_env.NODE_APP_INSTANCE ?? 0)}/ready`,
            ),
          ),
        );
        if (ready.every((s) => s === 200)) return;
        waiting = `/ready: ${ready.join(', ')}`;
      }
      await sleep(250);
    }
    throw new Error(`${options.app}: ${count} workers not ready in time (${waiting})`);
  }

  return {
    name: 'pm2',
    async instances(): Promise<ScrapedInstance[]> {
      return onlineWorkers(await list(), options.metricsHost, options.metricsPort);
    },
    async scaleTo(desired) {
      if (!Number.isInteger(desired) || desired < 1) throw new Error(`cannot scale to ${desired}`);
      const c = await connect();
      await new Promise<void>((resolve, reject) =>
        c.scale(options.app, desired, (err) =>
          err && !/same process number/i.test(err.message) ? reject(err) : resolve(),
        ),
      );
      await settled(desired);
    },
    async close() {
      client?.disconnect();
      client = null;
      connected = null;
    },
  };
}
