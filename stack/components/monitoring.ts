import { spawn } from 'node:child_process';
import { closeSync, fstatSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  postgresExporterQueries,
  renderAlertmanager,
  renderBlackbox,
  renderPrometheus,
  type ScrapeJob,
  type TargetGroup,
} from '../../src/ops/monitoring.js';
import type { Component, ServerRecord, StackState } from '../types.js';
import { freePort, GiveUp, httpGet, isAlive, killAndWait, waitFor } from '../util.js';
import { autoscaleBounds } from './autoscaler.js';

/** Debian's binaries (scripts/install-ops-tools.sh installs them). */
export const monitoringBins = {
  prometheus: '/usr/bin/prometheus',
  alertmanager: '/usr/bin/prometheus-alertmanager',
  node: '/usr/bin/prometheus-node-exporter',
  postgres: '/usr/bin/prometheus-postgres-exporter',
  redis: '/usr/bin/prometheus-redis-exporter',
  nginx: '/usr/bin/prometheus-nginx-exporter',
  blackbox: '/usr/bin/prometheus-blackbox-exporter',
} as const;

type Daemon = 'webhook' | keyof typeof monitoringBins;

interface MonitoringRecord {
  dir: string;
  prometheusDir: string;
  /** Daemon → its loopback port and pid. */
  daemons: Partial<Record<Daemon, { port: number; pid: number | null }>>;
}

/** Public details in `status --json` under `components.monitoring`. */
export interface MonitoringStatus {
  readonly prometheus: string;
  readonly alertmanager: string;
  /** The bundled webhook receiver Alertmanager posts to (notifications in its alerts.jsonl). */
  readonly webhook: string;
  readonly alertsLog: string;
  /** Each exporter's /metrics (blackbox: its /probe is what Prometheus calls). */
  readonly exporters: Readonly<Record<'node' | 'postgres' | 'redis' | 'nginx' | 'blackbox', string>>;
  /** Every scrape target Prometheus is given, by job. */
  readonly targets: Readonly<Partial<Record<ScrapeJob, readonly string[]>>>;
  readonly pids: readonly number[];
}

const url = (port: number | undefined) => `http://127.0.0.1:${port ?? 0}`;

/** The last lines a daemon wrote to its log after `from` (bytes), on one line: why it exited. */
function logTail(file: string, from: number, lines = 5): string {
  try {
    const text = readFileSync(file).subarray(from).toString('utf8').trim();
    return text === '' ? '(its log is empty)' : text.split('\n').slice(-lines).join(' | ');
  } catch {
    return '(no log)';
  }
}

function record(state: StackState): MonitoringRecord | undefined {
  return state.components.monitoring as MonitoringRecord | undefined;
}

export function monitoringPids(state: StackState): { expected: number; alive: number[] } {
  const daemons = Object.values(record(state)?.daemons ?? {});
  return {
    expected: daemons.length,
    alive: daemons.flatMap((d) => (d.pid !== null && isAlive(d.pid) ? [d.pid] : [])),
  };
}

function monitorTargets(state: StackState): TargetGroup[] {
  const rec = state.components.autoscaler as
    | { monitors: { server: string; metricsUrl: string }[] }
    | undefined;
  return (rec?.monitors ?? []).map((m) => ({
    targets: [new URL(m.metricsUrl).host],
    labels: { server: m.server },
  }));
}

/**
 * A server's workers as production lists them (deploy/prometheus/prometheus.yml): one target per
 * worker it runs; under --autoscale one per slot up to the monitor's max, those at or above its min
 * labelled autoscaled="true" (an empty one is not a TargetDown).
 */
function workerTargets(state: StackState, s: ServerRecord): TargetGroup[] {
  const slots = (from: number, to: number) =>
    Array.from({ length: Math.max(0, to - from) }, (_, i) => `${s.host}:${s.metricsPort + from + i}`);
  const bounds = autoscaleBounds(state, s.name);
  if (bounds === null) return [{ targets: slots(0, s.instances), labels: { server: s.name } }];
  const groups: TargetGroup[] = [
    { targets: slots(0, bounds.min), labels: { server: s.name } },
    { targets: slots(bounds.min, bounds.max), labels: { server: s.name, autoscaled: 'true' } },
  ];
  return groups.filter((g) => g.targets.length > 0);
}

/** The stack's scrape targets: every PM2 worker of every server, the exporters, the edge probes. */
function targets(state: StackState, ports: Record<Daemon, number>): Record<ScrapeJob, TargetGroup[]> {
  const local = (port: number): TargetGroup[] => [{ targets: [`127.0.0.1:${port}`] }];
  const https = typeof state.entry === 'object' && state.entry !== null ? state.entry.https : '';
  return {
    shipshape: state.servers.flatMap((s) => workerTargets(state, s)),
    node: local(ports.node),
    postgres: local(ports.postgres),
    redis: local(ports.redis),
    nginx: local(ports.nginx),
    // The public /health through nginx and TLS (also the certificate's expiry), as production does.
    blackbox: [
      {
        targets: [`127.0.0.1:${ports.blackbox}`],
        labels: { __param_target: `${https}/health`, __param_module: 'https_health' },
      },
    ],
    prometheus: local(ports.prometheus),
    alertmanager: local(ports.alertmanager),
    // --autoscale: each monitor's own /metrics (the autoscaler component comes before this one).
    autoscaler: monitorTargets(state),
  };
}

/**
 * `--monitoring`: Prometheus, Alertmanager, the bundled webhook receiver and Debian's exporters
 * (node, postgres, redis, nginx via stub_status, blackbox probing the public /health and the
 * certificate), from the shipped deploy/prometheus and deploy/alertmanager files rendered with the
 * stack's own targets. Comes after nginx: it reads the servers, the database, Redis and the edge
 * from the state. Everything on 127.0.0.1, free ports, data inside the state directory.
 */
export function monitoring(): Component {
  return {
    name: 'monitoring',
    enabled: (options) => options.monitoring === true,
    async up(ctx) {
      const { state } = ctx;
      const dir = join(state.stateDir, 'monitoring');
      mkdirSync(join(dir, 'logs'), { recursive: true });
      const rec: MonitoringRecord = { dir, prometheusDir: join(dir, 'prometheus'), daemons: {} };
      state.components.monitoring = rec;
      ctx.save();
      const ports = {} as Record<Daemon, number>;

      /**
       * Starts one daemon on a free port and waits until `path` answers 200. A port is free when
       * picked, not when bound: a connection or another test may take it in between. A daemon that
       * exits with its address in use starts again on another port (three tries); one that exits for
       * any other reason ends the wait at once, with the end of its log in the error.
       */
      const launch = async (
        name: Daemon,
        path: string,
        spawnArgs: (port: number) => readonly [bin: string, args: string[], env?: NodeJS.ProcessEnv],
      ) => {
        const logFile = join(dir, 'logs', `${name}.log`);
        for (let attempt = 1; ; attempt++) {
          ports[name] = await freePort();
          const [bin, args, env = {}] = spawnArgs(ports[name]);
          const log = openSync(logFile, 'a');
          const from = fstatSync(log).size;
          const child = spawn(bin, args, {
            detached: true,
            stdio: ['ignore', log, log],
            env: { ...process.env, ...env },
            cwd: dir,
          });
          closeSync(log);
          child.unref();
          const pid = child.pid ?? null;
          rec.daemons[name] = { port: ports[name], pid };
          ctx.save();
          try {
            await waitFor(
              `${name} to answer on 127.0.0.1:${ports[name]}${path} (log: ${logFile})`,
              async () => {
                if (!isAlive(pid)) throw new GiveUp(`${name} exited: ${logTail(logFile, from)}`);
                return (await httpGet(`${url(ports[name])}${path}`)).status === 200;
              },
            );
            return;
          } catch (err) {
            const portTaken = /address already in use|EADDRINUSE/i.test(logTail(logFile, from));
            if (!(err instanceof GiveUp) || !portTaken || attempt === 3) throw err;
            ctx.log(`monitoring: ${name}'s port ${ports[name]} was taken meanwhile; another one`);
          }
        }
      };

      const alertsLog = join(dir, 'alerts.jsonl');
      // GET /alerts lists what it received (an empty list at first).
      await launch('webhook', '/alerts', (port) => [
        process.execPath,
        [
          join(ctx.root, 'dist', 'cli', 'alert-webhook.js'),
          '--host',
          '127.0.0.1',
          '--port',
          String(port),
          '--log',
          alertsLog,
        ],
      ]);
      const amConfig = renderAlertmanager(join(dir, 'alertmanager'), {
        webhookUrl: url(ports.webhook),
        fast: true,
      });
      await launch('alertmanager', '/-/ready', (port) => [
        monitoringBins.alertmanager,
        [
          `--config.file=${amConfig}`,
          `--storage.path=${join(dir, 'alertmanager', 'data')}`,
          `--web.listen-address=127.0.0.1:${port}`,
          // A single instance: no gossip port on every interface.
          '--cluster.listen-address=',
          '--log.level=warn',
        ],
      ]);
      // Only the collectors the rules and the dashboard read (systemd and friends are slow here).
      await launch('node', '/metrics', (port) => [
        monitoringBins.node,
        [
          `--web.listen-address=127.0.0.1:${port}`,
          '--collector.disable-defaults',
          '--collector.cpu',
          '--collector.filesystem',
          '--collector.loadavg',
          '--collector.meminfo',
          '--collector.netdev',
        ],
      ]);
      const database = state.databases.find((d) => d.role === 'primary' && d.url.startsWith('postgres'));
      if (database === undefined) throw new Error('the monitoring component needs a PostgreSQL database');
      const dsn = new URL(database.url);
      dsn.searchParams.set('sslmode', 'disable');
      await launch('postgres', '/metrics', (port) => [
        monitoringBins.postgres,
        [`--web.listen-address=127.0.0.1:${port}`, `--extend.query-path=${postgresExporterQueries}`],
        { DATA_SOURCE_NAME: dsn.toString() },
      ]);
      const redis = state.redis;
      if (redis === null) throw new Error('the monitoring component needs Redis');
      await launch('redis', '/metrics', (port) => [
        monitoringBins.redis,
        ['-web.listen-address', `127.0.0.1:${port}`, '-redis.addr', redis.url],
      ]);
      const nginx = state.nginx;
      if (nginx === null) throw new Error('the monitoring component needs nginx');
      await launch('nginx', '/metrics', (port) => [
        monitoringBins.nginx,
        [
          '-web.listen-address',
          `127.0.0.1:${port}`,
          '-nginx.scrape-uri',
          `http://127.0.0.1:${nginx.statusPort}/stub_status`,
        ],
      ]);
      await launch('blackbox', '/metrics', (port) => [
        monitoringBins.blackbox,
        [
          `--config.file=${renderBlackbox(join(dir, 'blackbox'), { caFile: state.caFile })}`,
          `--web.listen-address=127.0.0.1:${port}`,
        ],
      ]);
      // Last: its configuration names every other daemon's port, and its own (it scrapes itself).
      await launch('prometheus', '/-/ready', (port) => {
        const promConfig = renderPrometheus(rec.prometheusDir, {
          // Short enough to see a change within seconds, light enough for a laptop.
          interval: '5s',
          targets: targets(state, ports),
        });
        return [
          monitoringBins.prometheus,
          [
            `--config.file=${promConfig}`,
            `--storage.tsdb.path=${join(rec.prometheusDir, 'data')}`,
            `--web.listen-address=127.0.0.1:${port}`,
            '--log.level=warn',
          ],
        ];
      });
      ctx.log(`monitoring: Prometheus ${url(ports.prometheus)}, Alertmanager ${url(ports.alertmanager)}`);
      ctx.log(`monitoring: alerts go to ${url(ports.webhook)} (${alertsLog})`);
    },
    async down(state, log) {
      const rec = record(state);
      if (rec === undefined) return;
      const pids = Object.values(rec.daemons).flatMap((d) =>
        d.pid !== null && isAlive(d.pid) ? [d.pid] : [],
      );
      if (pids.length > 0) await killAndWait(pids, 'SIGTERM');
      log('monitoring: stopped');
    },
    status(state): MonitoringStatus {
      const rec = record(state) as MonitoringRecord;
      const port = (name: Daemon) => rec.daemons[name]?.port;
      const ports = Object.fromEntries(Object.entries(rec.daemons).map(([k, v]) => [k, v.port])) as Record<
        Daemon,
        number
      >;
      const byJob = Object.fromEntries(
        Object.entries(targets(state, ports)).map(([job, groups]) => [
          job,
          groups.flatMap((g) => (job === 'blackbox' ? [g.labels?.__param_target ?? ''] : g.targets)),
        ]),
      );
      return {
        prometheus: url(port('prometheus')),
        alertmanager: url(port('alertmanager')),
        webhook: url(port('webhook')),
        alertsLog: join(rec.dir, 'alerts.jsonl'),
        exporters: {
          node: `${url(port('node'))}/metrics`,
          postgres: `${url(port('postgres'))}/metrics`,
          redis: `${url(port('redis'))}/metrics`,
          nginx: `${url(port('nginx'))}/metrics`,
          blackbox: `${url(port('blackbox'))}/metrics`,
        },
        targets: byJob,
        pids: monitoringPids(state).alive,
      };
    },
  };
}
