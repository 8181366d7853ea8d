import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Component, ServerRecord, StackState } from '../types.js';
import { freePort, GiveUp, isAlive, killAndWait, waitFor } from '../util.js';

/**
 * `--autoscale`: one `npm run autoscale -- --actuator pm2` process per PM2 app server (decision
 * 0083), started after the servers, each on that server's PM2_HOME and metrics ports, writing its
 * last decision to a status file that `status --json` shows beside the server's live `workers`.
 */

export interface AutoscaleOptions {
  readonly min: number;
  readonly max: number;
  /** More `npm run autoscale` flags (shorter windows for tests, targets, --dry-run). */
  readonly extraArgs: readonly string[];
}

interface MonitorRecord {
  server: string;
  pid: number | null;
  statusFile: string;
  log: string;
  metricsUrl: string;
}

interface AutoscalerRecord {
  min: number;
  max: number;
  args: string[];
  monitors: MonitorRecord[];
}

const record = (state: StackState) => state.components.autoscaler as AutoscalerRecord | undefined;

/** The last decision of a server's monitor (null before the first one, or without --autoscale). */
export function lastDecision(state: StackState, server: string): unknown {
  const monitor = record(state)?.monitors.find((m) => m.server === server);
  if (monitor === undefined || !existsSync(monitor.statusFile)) return null;
  try {
    return JSON.parse(readFileSync(monitor.statusFile, 'utf8'));
  } catch {
    return null; // being replaced right now (written by rename, so this is rare)
  }
}

/** The /metrics URLs of a server's workers as its monitor last saw them (null without --autoscale). */
export function monitoredMetricsUrls(state: StackState, server: string): string[] | null {
  const last = lastDecision(state, server) as { instances?: { metricsUrl?: string }[] | null } | null;
  if (last === null || !Array.isArray(last.instances)) return null;
  return last.instances.map((i) => i.metricsUrl).filter((u): u is string => typeof u === 'string');
}

/** The worker bounds of a server's monitor (null when it has none). */
export function autoscaleBounds(state: StackState, server: string): { min: number; max: number } | null {
  const rec = record(state);
  if (rec === undefined || !rec.monitors.some((m) => m.server === server)) return null;
  return { min: rec.min, max: rec.max };
}

export function autoscaledServers(state: StackState): ServerRecord[] {
  const names = new Set(record(state)?.monitors.map((m) => m.server) ?? []);
  return state.servers.filter((s) => names.has(s.name));
}

export function autoscalerPids(state: StackState): number[] {
  return (record(state)?.monitors ?? []).map((m) => m.pid).filter((p): p is number => isAlive(p));
}

export function autoscaler(options: AutoscaleOptions): Component {
  return {
    name: 'autoscaler',
    async up(ctx) {
      const dir = join(ctx.state.stateDir, 'autoscale');
      mkdirSync(dir, { recursive: true });
      const rec: AutoscalerRecord = {
        min: options.min,
        max: options.max,
        args: [...options.extraArgs],
        monitors: [],
      };
      ctx.state.components.autoscaler = rec;
      for (const server of ctx.state.servers.filter((s) => s.pm2Home !== null)) {
        // Not one of the workers' metrics ports (METRICS_PORT + instance, up to max): a worker the
        // monitor adds later binds there.
        let metricsPort = await freePort(server.host);
        while (metricsPort >= server.metricsPort && metricsPort < server.metricsPort + options.max)
          metricsPort = await freePort(server.host);
        const monitor: MonitorRecord = {
          server: server.name,
          pid: null,
          statusFile: join(dir, `${server.name}.json`),
          log: join(dir, `${server.name}.log`),
          metricsUrl: `http://${server.host}:${metricsPort}/metrics`,
        };
        const out = openSync(monitor.log, 'a');
        const child = spawn(
          process.execPath,
          [
            join(ctx.root, 'dist', 'cli', 'autoscale.js'),
            ...['--actuator', 'pm2', '--pm2-home', server.pm2Home as string, '--app', server.name],
            ...['--worker-host', server.host, '--worker-metrics-port', String(server.metricsPort)],
            ...['--min', String(options.min), '--max', String(options.max)],
            ...[
              '--status-file',
              monitor.statusFile,
              '--metrics-host',
              server.host,
              '--metrics-port',
              String(metricsPort),
            ],
            // Servers share this machine: each worker's own CPU, not the host's.
            '--cpu',
            'workers',
            ...options.extraArgs,
          ],
          {
            cwd: ctx.root,
            env: { ...process.env, PM2_HOME: server.pm2Home as string },
            stdio: ['ignore', out, out],
            detached: true,
          },
        );
        closeSync(out);
        child.unref();
        monitor.pid = child.pid ?? null;
        rec.monitors.push(monitor);
        ctx.save();
        ctx.log(`${server.name}: autoscaler (${options.min}–${options.max} workers), log ${monitor.log}`);
      }
      // Up means deciding: each monitor has made its first decision (or the log says why not).
      for (const monitor of rec.monitors)
        await waitFor(`the ${monitor.server} autoscaler's first decision (see ${monitor.log})`, () => {
          if (!isAlive(monitor.pid))
            throw new GiveUp(
              `the ${monitor.server} autoscaler exited: ${readFileSync(monitor.log, 'utf8').slice(-2000)}`,
            );
          return existsSync(monitor.statusFile);
        });
    },
    async down(state, log) {
      const monitors = record(state)?.monitors ?? [];
      const alive = monitors.map((m) => m.pid).filter((p): p is number => isAlive(p));
      if (alive.length === 0) return;
      // SIGTERM: each stops after the decision in progress (a scale-down finishes its drain).
      await killAndWait(alive, 'SIGTERM').catch(() => killAndWait(alive));
      log('autoscalers: stopped');
    },
    status(state) {
      const rec = record(state);
      if (rec === undefined) return null;
      return {
        min: rec.min,
        max: rec.max,
        args: rec.args,
        monitors: rec.monitors.map((m) => ({
          server: m.server,
          pid: isAlive(m.pid) ? m.pid : null,
          metricsUrl: m.metricsUrl,
          log: m.log,
        })),
      };
    },
  };
}
