import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type AlertWebhook, startAlertWebhook } from '../../src/ops/alert-webhook.js';
import {
  postgresExporterQueries,
  renderAlertmanager,
  renderBlackbox,
  renderPrometheus,
  type TargetGroup,
} from '../../src/ops/monitoring.js';
import { type Daemon, skipUnlessTools, startDaemon, tools, waitFor } from '../harness/monitoring.js';
import { type Pm2Cluster, startPm2Cluster } from '../harness/pm2.js';
import { freePort } from '../harness/ports.js';
import { postgresAdminUrl, redisUrl, skipUnless } from '../harness/services.js';
import { type TestDatabaseEnv, testDatabaseEnv } from '../helper.js';
import { send } from '../support/load.js';

// The live test: the shipped Prometheus, Alertmanager and exporter configurations (rendered with
// loopback targets, 1 s intervals, and TargetDown's `for` shortened from 2 m to 10 s so a CI run
// can wait for it) against two app servers of two PM2 workers each, on PostgreSQL.
//   - every target is up; after N requests the scraped totals add up to exactly N;
//   - every panel of the Grafana dashboard returns data;
//   - an app server killed: TargetDown goes pending, then firing, and the webhook receives it;
//     restored: the alert resolves and the webhook receives the resolution.

const root = new URL('../..', import.meta.url).pathname;
const dashboard = JSON.parse(
  readFileSync(join(root, 'deploy/grafana/dashboards/shipshape.json'), 'utf8'),
) as {
  panels: Array<{ type: string; title: string; targets?: Array<{ expr: string }> }>;
};

async function isFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

async function freePortPair(): Promise<number> {
  for (;;) {
    const base = await freePort();
    if (base < 65535 && (await isFree(base + 1))) return base;
  }
}

interface PromAlert {
  labels: Record<string, string>;
  state: 'pending' | 'firing';
  activeAt: string;
}

const skip =
  skipUnlessTools(
    'prometheus',
    'alertmanager',
    'nodeExporter',
    'postgresExporter',
    'redisExporter',
    'blackbox',
  ) || (await skipUnless('postgres', 'redis'));

describe('live: Prometheus and Alertmanager against two PM2 servers', { skip }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'shipshape-monitoring-'));
  const daemons: Daemon[] = [];
  let database: TestDatabaseEnv;
  let webhook: AlertWebhook;
  let promUrl: string;
  const servers: Array<{ name: string; port: number; metricsPort: number; cluster?: Pm2Cluster }> = [];
  let appEnv: Record<string, string>;

  const query = async (expr: string) => {
    const res = await fetch(`${promUrl}/api/v1/query`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ query: expr }),
    });
    const body = (await res.json()) as {
      status: string;
      error?: string;
      data: { result: Array<{ metric: Record<string, string>; value: [number, string] }> };
    };
    assert.equal(body.status, 'success', `${expr}: ${body.error}`);
    return body.data.result;
  };
  const alerts = async () =>
    ((await (await fetch(`${promUrl}/api/v1/alerts`)).json()) as { data: { alerts: PromAlert[] } }).data
      .alerts;

  const startServer = (server: (typeof servers)[number]) =>
    startPm2Cluster({ instances: 2, port: server.port, metricsPort: server.metricsPort, env: appEnv });

  before(async () => {
    database = await testDatabaseEnv('postgres');
    appEnv = {
      ...database.env,
      JWT_SECRET: randomBytes(48).toString('base64'),
      LOG_LEVEL: 'warn',
      SHUTDOWN_GRACE_MS: '0',
      RATE_LIMIT_MAX: '1000000',
      BUILD_COMMIT: 'livetest',
      // The warm-up job reads the catalog over HTTP at start-up: its requests would join the counts
      // the test adds up exactly (seen in CI: the sum passed 200).
      CACHE_WARM_UP_PAGES: '0',
    };
    for (const name of ['app-1', 'app-2']) {
      servers.push({ name, port: await freePort(), metricsPort: await freePortPair() });
    }
    const started = await Promise.allSettled(servers.map(startServer));
    started.forEach((result, i) => {
      if (result.status === 'fulfilled') (servers[i] as (typeof servers)[number]).cluster = result.value;
    });
    const failed = started.find((r) => r.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;

    webhook = await startAlertWebhook({ host: '127.0.0.1', port: 0, logFile: join(dir, 'alerts.jsonl') });
    const ports = {
      prometheus: await freePort(),
      alertmanager: await freePort(),
      node: await freePort(),
      postgres: await freePort(),
      redis: await freePort(),
      blackbox: await freePort(),
    };
    const amConfig = renderAlertmanager(join(dir, 'alertmanager'), { webhookUrl: webhook.url, fast: true });
    daemons.push(
      startDaemon(tools.alertmanager, [
        `--config.file=${amConfig}`,
        `--storage.path=${join(dir, 'alertmanager', 'data')}`,
        `--web.listen-address=127.0.0.1:${ports.alertmanager}`,
        '--cluster.listen-address=',
        '--log.level=warn',
      ]),
      // Only the collectors the rules and the dashboard read (systemd and friends are slow here).
      startDaemon(tools.nodeExporter, [
        `--web.listen-address=127.0.0.1:${ports.node}`,
        '--collector.disable-defaults',
        '--collector.filesystem',
        '--collector.loadavg',
        '--collector.cpu',
        '--collector.meminfo',
      ]),
      startDaemon(
        tools.postgresExporter,
        [
          `--web.listen-address=127.0.0.1:${ports.postgres}`,
          `--extend.query-path=${postgresExporterQueries}`,
        ],
        { ...process.env, DATA_SOURCE_NAME: `${postgresAdminUrl}?sslmode=disable` },
      ),
      startDaemon(tools.redisExporter, [
        '-web.listen-address',
        `127.0.0.1:${ports.redis}`,
        '-redis.addr',
        redisUrl,
      ]),
      startDaemon(tools.blackbox, [
        `--config.file=${renderBlackbox(join(dir, 'blackbox'))}`,
        `--web.listen-address=127.0.0.1:${ports.blackbox}`,
      ]),
    );
    const local = (port: number): TargetGroup[] => [{ targets: [`127.0.0.1:${port}`] }];
    const promConfig = renderPrometheus(join(dir, 'prometheus'), {
      interval: '1s',
      alertFor: { TargetDown: '10s' },
      targets: {
        shipshape: servers.map((s) => ({
          targets: [`127.0.0.1:${s.metricsPort}`, `127.0.0.1:${s.metricsPort + 1}`],
          labels: { server: s.name },
        })),
        node: local(ports.node),
        postgres: local(ports.postgres),
        redis: local(ports.redis),
        nginx: [],
        blackbox: [
          {
            targets: [`127.0.0.1:${ports.blackbox}`],
            labels: {
              __param_target: `http://127.0.0.1:${servers[0]?.port}/health`,
              __param_module: 'http_health',
            },
          },
        ],
        prometheus: local(ports.prometheus),
        alertmanager: local(ports.alertmanager),
      },
    });
    daemons.push(
      startDaemon(tools.prometheus, [
        `--config.file=${promConfig}`,
        `--storage.tsdb.path=${join(dir, 'prometheus', 'data')}`,
        `--web.listen-address=127.0.0.1:${ports.prometheus}`,
        '--log.level=warn',
      ]),
    );
    promUrl = `http://127.0.0.1:${ports.prometheus}`;
    await waitFor('Prometheus ready', async () =>
      (await fetch(`${promUrl}/-/ready`)).ok ? true : undefined,
    );
  });

  after(async () => {
    for (const daemon of daemons.reverse()) await daemon.stop();
    for (const server of servers) await server.cluster?.destroy();
    await webhook?.close();
    await database?.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  test('every target is up: 4 workers on 2 servers, the exporters, the probe, Prometheus, Alertmanager', async () => {
    const targets = await waitFor('every target up', async () => {
      const body = (await (await fetch(`${promUrl}/api/v1/targets?state=active`)).json()) as {
        data: { activeTargets: Array<{ labels: Record<string, string>; health: string; lastError: string }> };
      };
      const active = body.data.activeTargets;
      return active.length === 10 && active.every((t) => t.health === 'up') ? active : undefined;
    });
    const shipshape = targets.filter((t) => t.labels.job === 'shipshape');
    assert.equal(shipshape.length, 4);
    assert.deepEqual([...new Set(shipshape.map((t) => t.labels.server))].sort(), ['app-1', 'app-2']);
    // The probed URL is the blackbox target's instance (relabelled from __param_target).
    const probe = targets.find((t) => t.labels.job === 'blackbox');
    assert.equal(probe?.labels.instance, `http://127.0.0.1:${servers[0]?.port}/health`);
    const success = await waitFor('a successful probe', async () => {
      const result = await query('probe_success{job="blackbox"}');
      return result[0]?.value[1] === '1' ? result : undefined;
    });
    assert.equal(success.length, 1);
  });

  test('after N requests spread over both servers, the scraped totals add up to exactly N', async () => {
    const n = 200;
    for (let i = 0; i < n; i++) {
      const server = servers[i % 2] as (typeof servers)[number];
      const res = await send(server.port, { method: 'GET', path: '/api/products' });
      assert.equal(res.status, 200);
    }
    const expr = 'sum(http_requests_total{job="shipshape", route="/api/products"})';
    const total = await waitFor(`${expr} == ${n}`, async () => {
      const value = Number((await query(expr))[0]?.value[1]);
      return value === n ? value : undefined;
    });
    assert.equal(total, n);
    // Both servers and all four workers served some: the sum is over every target.
    const perInstance = await query(
      'sum by (instance) (http_requests_total{job="shipshape", route="/api/products"})',
    );
    assert.equal(perInstance.length, 4);
    const perServer = await query(
      'sum by (server) (http_requests_total{job="shipshape", route="/api/products"})',
    );
    assert.deepEqual(perServer.map((r) => Number(r.value[1])).sort(), [n / 2, n / 2]);

    // scripts/monitor-traffic.sh reads the same Prometheus.
    const monitor = spawnSync('bash', ['scripts/monitor-traffic.sh', '--once', '--prometheus', promUrl], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    assert.equal(monitor.status, 0, monitor.stderr);
    assert.match(monitor.stdout, /^\S+Z {2}req\/s \d+\.\d {2}5xx 0\.00% {2}p95 \d+ ms {2}workers up 4\/4\n$/);
  });

  test('every dashboard panel’s query returns data', async () => {
    // Grafana's variables and macros, as the dashboard's defaults would substitute them.
    const substitute = (expr: string) =>
      expr.replaceAll('$__rate_interval', '1m').replaceAll('$job', 'shipshape').replaceAll('$instance', '.+');
    const panels = dashboard.panels.filter((p) => p.type !== 'row');
    assert.ok(panels.length >= 20);
    const empty: string[] = [];
    await waitFor(
      'every panel to have data',
      async () => {
        empty.length = 0;
        for (const panel of panels) {
          for (const target of panel.targets ?? []) {
            if ((await query(substitute(target.expr))).length === 0)
              empty.push(`${panel.title}: ${target.expr}`);
          }
        }
        return empty.length === 0 ? true : undefined;
      },
      60_000,
      2000,
    ).catch((err) => {
      throw new Error(`${(err as Error).message}\nempty:\n  ${empty.join('\n  ')}`);
    });
  });

  test('an app server killed: TargetDown pending → firing → webhook; restored: resolved', async (t) => {
    const victim = servers[1] as (typeof servers)[number];
    const isVictim = (labels: Record<string, string>) =>
      labels.alertname === 'TargetDown' && labels.server === victim.name;
    const t0 = Date.now();
    await victim.cluster?.destroy();
    victim.cluster = undefined;
    const killedAt = Date.now();

    const pending = await waitFor(
      'TargetDown pending',
      async () => {
        const found = (await alerts()).filter((a) => isVictim(a.labels));
        return found.length === 2 && found.every((a) => a.state === 'pending') ? found : undefined;
      },
      60_000,
      200,
    );
    const pendingAt = Date.now();
    assert.deepEqual(pending.map((a) => a.labels.instance).sort(), [
      `127.0.0.1:${victim.metricsPort}`,
      `127.0.0.1:${victim.metricsPort + 1}`,
    ]);

    await waitFor(
      'TargetDown firing',
      async () => {
        const found = (await alerts()).filter((a) => isVictim(a.labels) && a.state === 'firing');
        return found.length === 2 ? found : undefined;
      },
      60_000,
      200,
    );
    const firingAt = Date.now();

    const notified = await waitFor('the webhook notified of TargetDown', async () =>
      webhook.received.find((n) => n.status === 'firing' && n.alerts.some((a) => isVictim(a.labels))),
    );
    const notifiedAt = Date.now();
    assert.equal(notified.receiver, 'tickets');
    const alert = notified.alerts.find((a) => isVictim(a.labels));
    assert.equal(alert?.labels.severity, 'ticket');
    assert.equal(alert?.annotations.runbook_url, 'README.md#runbook-targetdown');
    // scripts/monitor-traffic.sh shows the two workers down.
    const monitor = spawnSync('bash', ['scripts/monitor-traffic.sh', '--once', '--prometheus', promUrl], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    assert.equal(monitor.status, 0, monitor.stderr);
    assert.match(monitor.stdout, /workers up 2\/4 {2}down: 127\.0\.0\.1:\d+ 127\.0\.0\.1:\d+\n$/);
    // The other server still serves: no ServiceDown page.
    assert.ok(!(await alerts()).some((a) => a.labels.alertname === 'ServiceDown'));

    // Restore, and watch the alert clear while PM2 brings the workers up (they serve /metrics
    // before they report ready).
    const restoreAt = Date.now();
    const restarting = startServer(victim);
    restarting.catch(() => {});
    await waitFor(
      'TargetDown gone from Prometheus',
      async () => ((await alerts()).some((a) => isVictim(a.labels)) ? undefined : true),
      90_000,
      200,
    );
    const clearedAt = Date.now();
    await waitFor('the webhook notified of the resolution', async () =>
      webhook.received.find(
        (n) => n.status === 'resolved' && n.alerts.some((a) => isVictim(a.labels) && a.status === 'resolved'),
      ),
    );
    const resolvedAt = Date.now();
    victim.cluster = await restarting;
    const servingAt = Date.now();

    const s = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
    t.diagnostic(
      `timings: killed in ${s(killedAt - t0)}; pending after ${s(pendingAt - killedAt)}; firing after ${s(firingAt - killedAt)} ` +
        `(for: 10s); at the webhook after ${s(notifiedAt - killedAt)}. Restart begun: alert cleared after ${s(clearedAt - restoreAt)}, ` +
        `resolution at the webhook after ${s(resolvedAt - restoreAt)}, PM2 serving again after ${s(servingAt - restoreAt)}`,
    );
  });
});
