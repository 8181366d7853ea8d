import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { inCi } from './services.js';

/** Debian's binaries for the monitoring suites (scripts/install-ops-tools.sh installs them). */
export const tools = {
  promtool: '/usr/bin/promtool',
  prometheus: '/usr/bin/prometheus',
  amtool: '/usr/bin/amtool',
  alertmanager: '/usr/bin/prometheus-alertmanager',
  blackbox: '/usr/bin/prometheus-blackbox-exporter',
  nodeExporter: '/usr/bin/prometheus-node-exporter',
  postgresExporter: '/usr/bin/prometheus-postgres-exporter',
  redisExporter: '/usr/bin/prometheus-redis-exporter',
  nginxExporter: '/usr/bin/prometheus-nginx-exporter',
} as const;

/** False when every named tool runs; a skip message outside CI; under CI an error, never a skip. */
export function skipUnlessTools(...names: Array<keyof typeof tools>): string | false {
  for (const name of names) {
    const probe = spawnSync(tools[name], ['--version'], { encoding: 'utf8' });
    if (probe.status === 0) continue;
    const message = `${tools[name]} is not installed; install it: sudo scripts/install-ops-tools.sh`;
    if (inCi) throw new Error(`CI requires ${message}`);
    return message;
  }
  return false;
}

export interface Daemon {
  readonly child: ChildProcess;
  output(): string;
  stop(): Promise<void>;
}

/** Starts a long-running tool in its own process group; stop() kills the group and waits. */
export function startDaemon(
  bin: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): Daemon {
  const child = spawn(bin, args, { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let text = '';
  child.stdout?.on('data', (chunk) => {
    text += chunk;
  });
  child.stderr?.on('data', (chunk) => {
    text += chunk;
  });
  const exited = once(child, 'exit');
  return {
    child,
    output: () => text,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      try {
        process.kill(-(child.pid as number), 'SIGTERM');
      } catch {
        return;
      }
      const killed = await Promise.race([exited.then(() => true), sleep(10_000).then(() => false)]);
      if (!killed) {
        try {
          process.kill(-(child.pid as number), 'SIGKILL');
        } catch {
          // already gone
        }
        await exited;
      }
    },
  };
}

/** Polls `check` until it returns a value (not undefined), or fails after `timeoutMs`. */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined>,
  timeoutMs = 60_000,
  everyMs = 250,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}${lastError ? `: ${String(lastError)}` : ''}`,
      );
    }
    await sleep(everyMs);
  }
}
