import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { MonitoringStatus } from '../../stack/components/monitoring.js';
import type { StackStatus } from '../../stack/types.js';
import { skipUnlessTools, waitFor } from '../harness/monitoring.js';
import { edgeRequest } from '../support/stack.js';

export interface MonitoringEnv {
  readonly status: StackStatus;
  readonly printed: () => Promise<StackStatus>;
  readonly ca: string;
  readonly https: string;
}

/** The Debian tools `--monitoring` runs; false when all are there (under CI, missing ones throw). */
export const monitoringSkip = () =>
  skipUnlessTools(
    'prometheus',
    'alertmanager',
    'nodeExporter',
    'postgresExporter',
    'redisExporter',
    'nginxExporter',
    'blackbox',
  );

interface Target {
  labels: Record<string, string>;
  scrapeUrl: string;
  health: string;
  lastError: string;
}

/**
 * `npm run stack -- up --stage growth --monitoring`: Prometheus (the shipped deploy/prometheus,
 * targets from the stack), Alertmanager, the webhook receiver and Debian's exporters, all named in
 * `status --json`. Every scrape target is up, the nginx exporter reports stub_status, and the
 * blackbox probe sees the public /health over TLS and the certificate's expiry. Registered into
 * the growth file's suite (its stack), before the failover tests take servers down.
 */
export function monitoringSuites(env: () => MonitoringEnv): void {
  describe('monitoring as a stack component (--monitoring)', () => {
    let monitoring: MonitoringStatus;

    const query = async (expr: string) => {
      const res = await fetch(`${monitoring.prometheus}/api/v1/query`, {
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

    test('status --json names Prometheus, Alertmanager, the webhook and every exporter, on loopback, each answering', async () => {
      const printed = await env().printed();
      monitoring = printed.components.monitoring as MonitoringStatus;
      assert.ok(monitoring, JSON.stringify(Object.keys(printed.components)));
      assert.equal(printed.running, true, 'every process, monitoring included, is alive');
      assert.equal(monitoring.pids.length, 8, 'Prometheus, Alertmanager, webhook, five exporters');
      const urls = {
        'prometheus /-/ready': `${monitoring.prometheus}/-/ready`,
        'alertmanager /-/ready': `${monitoring.alertmanager}/-/ready`,
        'webhook /alerts': `${monitoring.webhook}/alerts`,
        ...Object.fromEntries(Object.entries(monitoring.exporters).map(([k, v]) => [`${k} exporter`, v])),
      };
      for (const [name, url] of Object.entries(urls)) {
        assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\//, name);
        assert.equal((await fetch(url)).status, 200, name);
      }
    });

    test('every scrape target is up: each PM2 worker of the three servers, the exporters, the probe, Prometheus, Alertmanager', async () => {
      const { status } = env();
      const workers = status.servers.reduce((n, s) => n + s.metricsUrls.length, 0);
      const expected = workers + 7;
      let last: Target[] = [];
      const targets = await waitFor(
        `${expected} targets, all up`,
        async () => {
          const body = (await (
            await fetch(`${monitoring.prometheus}/api/v1/targets?state=active`)
          ).json()) as {
            data: { activeTargets: Target[] };
          };
          last = body.data.activeTargets;
          return last.length === expected && last.every((t) => t.health === 'up') ? last : undefined;
        },
        90_000,
      ).catch((err: Error) => {
        throw new Error(
          `${err.message}\n${last.map((t) => `${t.labels.job} ${t.scrapeUrl} ${t.health} ${t.lastError}`).join('\n')}`,
        );
      });
      const jobs = targets.map((t) => t.labels.job).sort();
      assert.deepEqual(
        [...new Set(jobs)],
        ['alertmanager', 'blackbox', 'nginx', 'node', 'postgres', 'prometheus', 'redis', 'shipshape'],
      );
      // The app targets are the workers' metrics URLs the status names, labelled by server.
      assert.deepEqual(
        targets
          .filter((t) => t.labels.job === 'shipshape')
          .map((t) => `${t.labels.server} ${t.scrapeUrl}`)
          .sort(),
        status.servers.flatMap((s) => s.metricsUrls.map((u) => `${s.name} ${u}`)).sort(),
      );
      // The exporters really reach what they watch.
      for (const [expr, what] of [
        ['pg_up', 'PostgreSQL'],
        ['redis_up', 'Redis'],
        ['nginx_up', 'nginx stub_status'],
      ] as const) {
        const result = await waitFor(`${expr} == 1`, async () => {
          const r = await query(expr);
          return r.length === 1 && r[0]?.value[1] === '1' ? r : undefined;
        });
        assert.equal(result.length, 1, what);
      }
    });

    test('the nginx exporter reports the edge’s connections and requests (stub_status on loopback only)', async () => {
      const { https, ca } = env();
      const before = Number((await query('nginx_http_requests_total'))[0]?.value[1] ?? Number.NaN);
      assert.ok(before > 0, `nginx_http_requests_total ${before}`);
      for (let i = 0; i < 20; i++) assert.equal((await edgeRequest(`${https}/health`, { ca })).status, 200);
      const after = await waitFor('nginx_http_requests_total to count them', async () => {
        const value = Number((await query('nginx_http_requests_total'))[0]?.value[1]);
        return value >= before + 20 ? value : undefined;
      });
      assert.ok(after >= before + 20);
      for (const gauge of [
        'nginx_connections_active',
        'nginx_connections_accepted',
        'nginx_connections_handled',
      ])
        assert.equal((await query(gauge)).length, 1, gauge);
      // Dropped connections (accepted − handled) would mean nginx hit its limits.
      const dropped = await query('nginx_connections_accepted - nginx_connections_handled');
      assert.equal(dropped[0]?.value[1], '0');
      // stub_status is not reachable through the public edge.
      assert.equal((await edgeRequest(`${https}/stub_status`, { ca })).status, 404);
    });

    test('blackbox probes the public /health over TLS (trusting the stack’s CA) and reports the certificate’s expiry', async () => {
      const { https } = env();
      assert.deepEqual(monitoring.targets.blackbox, [`${https}/health`]);
      const success = await waitFor('a successful probe', async () => {
        const r = await query('probe_success{job="blackbox"}');
        return r[0]?.value[1] === '1' ? r : undefined;
      });
      assert.equal(success[0]?.metric.instance, `${https}/health`);
      const expiry = await query('probe_ssl_earliest_cert_expiry{job="blackbox"} - time()');
      const days = Number(expiry[0]?.value[1]) / 86_400;
      // scripts/local-ca.sh issues 90-day certificates: no expiry alert fires.
      assert.ok(days > 85 && days <= 90, `certificate expires in ${days} days`);
      // Nothing about the edge, the certificate or a target alerts (pending or firing) once all is up.
      await waitFor('no edge, certificate or target alert', async () => {
        const alerts = await query(
          'ALERTS{alertname=~"Certificate.*|EndpointProbeFailed|TargetDown|ExporterAbsent|ServiceDown|PostgresDown|RedisDown"}',
        );
        return alerts.length === 0 ? true : undefined;
      });
    });
  });
}
