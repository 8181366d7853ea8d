import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import type { FastifyInstance } from 'fastify';
import type { Registry } from 'prom-client';
import type { AuthDeps } from '../auth/auth.deps.js';
import { authenticate, requireRole } from '../auth/authenticate.js';
import { type OpsSnapshot, OpsSnapshotSchema } from './ops.schema.js';

export interface OpsDeps {
  readonly registry: Registry;
  readonly build: { version: string; commit: string };
  readonly appInstance: number;
}

type Sample = { value: number; labels: Record<string, string | number>; metricName?: string };

async function samples(registry: Registry, name: string): Promise<Sample[]> {
  const metric = registry.getSingleMetric(name);
  if (!metric) return [];
  return ((await metric.get()).values ?? []) as Sample[];
}

function sum(values: Sample[], where: (s: Sample) => boolean = () => true): number {
  return values.filter(where).reduce((total, s) => total + s.value, 0);
}

/**
 * `/api/ops` (admins): the numbers the operations page charts, read from this process's own
 * metrics registry. Counters and histograms are read as they are; the event-loop figures are
 * measured here with their own baselines, because prom-client's event-loop gauges restart their
 * interval at every read and the page must not disturb what Prometheus scrapes.
 */
export function opsRoutes(scope: FastifyInstance, auth: AuthDeps, deps: OpsDeps): void {
  const adminOnly = [authenticate(auth), requireRole('admin')];
  let previousElu = performance.eventLoopUtilization();
  const delay = monitorEventLoopDelay({ resolution: 20 });
  delay.enable();
  scope.addHook('onClose', async () => delay.disable());

  scope.get(
    '/metrics',
    {
      schema: {
        summary: 'Operations snapshot (admin)',
        description:
          "This instance's request, latency, cache, event-loop and pool figures at one moment, for the operations page. Prometheus scrapes `/metrics` instead.",
        operationId: 'getOpsSnapshot',
        tags: ['ops'],
        security: [{ bearerAuth: [] }],
        response: { 200: OpsSnapshotSchema },
      },
      preValidation: adminOnly,
    },
    async (): Promise<OpsSnapshot> => {
      const [requests, durations, inFlight, cache, poolMax, poolInUse, poolIdle, poolWaiting] =
        await Promise.all(
          [
            'http_requests_total',
            'http_request_duration_seconds',
            'http_requests_in_flight',
            'cache_requests_total',
            'db_pool_connections_max',
            'db_pool_connections_in_use',
            'db_pool_connections_idle',
            'db_pool_waiting_requests',
          ].map((name) => samples(deps.registry, name)),
        );
      const buckets = new Map<number, number>();
      for (const s of durations ?? []) {
        if (s.metricName !== 'http_request_duration_seconds_bucket') continue;
        const le = s.labels.le === '+Inf' ? 1e9 : Number(s.labels.le);
        buckets.set(le, (buckets.get(le) ?? 0) + s.value);
      }
      const now = performance.eventLoopUtilization();
      const utilization = performance.eventLoopUtilization(now, previousElu).utilization;
      previousElu = now;
      const delayP99 = delay.count > 0 ? delay.percentile(99) / 1e9 : 0;
      delay.reset();
      return {
        takenAt: new Date().toISOString(),
        instance: {
          pid: process.pid,
          appInstance: deps.appInstance,
          version: deps.build.version,
          commit: deps.build.commit,
          nodeVersion: process.version,
          uptimeSeconds: process.uptime(),
        },
        requests: {
          total: sum(requests ?? []),
          serverErrors: sum(requests ?? [], (s) => String(s.labels.status_code).startsWith('5')),
          inFlight: sum(inFlight ?? []),
          durationBuckets: [...buckets.entries()]
            .sort((a, b) => a[0] - b[0])
            .map(([le, count]) => ({ le, count })),
        },
        cache: {
          hits: sum(cache ?? [], (s) => s.labels.result === 'hit'),
          misses: sum(cache ?? [], (s) => s.labels.result === 'miss'),
          errors: sum(cache ?? [], (s) => s.labels.result === 'error'),
        },
        eventLoop: { utilization: Math.min(1, Math.max(0, utilization)), delayP99Seconds: delayP99 },
        pool: {
          max: sum(poolMax ?? []),
          inUse: sum(poolInUse ?? []),
          idle: sum(poolIdle ?? []),
          waiting: sum(poolWaiting ?? []),
        },
      };
    },
  );
}
