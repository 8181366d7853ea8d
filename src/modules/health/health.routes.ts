import type { FastifyInstance } from 'fastify';
import type { Lifecycle } from '../../infra/lifecycle.js';
import { HealthSchema, type Readiness, ReadinessSchema } from './health.schema.js';

export interface ReadinessProbes {
  /** Resolves when the database answers a trivial query in time. */
  database(): Promise<void>;
  /** 'degraded' when the shared cache is unreachable: the service still serves, from the database. */
  cache(): Promise<'up' | 'degraded'>;
  /** With read replicas: 'degraded' while none is usable (the primary then serves every read). */
  replicas?(): 'up' | 'degraded';
  /** Why the database schema cannot serve this code (unmigrated, behind, tables missing); undefined if it can. */
  schema(): Promise<string | undefined>;
}

/** Liveness (`/health`) and readiness (`/ready`), as docs/api.md specifies them. */
export function healthRoutes(app: FastifyInstance, lifecycle: Lifecycle, probes: ReadinessProbes): void {
  app.get(
    '/health',
    {
      schema: {
        summary: 'Liveness',
        operationId: 'getHealth',
        security: [],
        tags: ['health'],
        response: { 200: HealthSchema },
      },
      config: { rateLimit: false },
    },
    async () => ({
      status: 'healthy' as const,
      timestamp: new Date().toISOString(),
      uptime: process.uptime(),
    }),
  );

  app.get(
    '/ready',
    {
      schema: {
        summary: 'Readiness',
        operationId: 'getReadiness',
        security: [],
        tags: ['health'],
        response: { 200: ReadinessSchema, 503: ReadinessSchema },
      },
      config: { rateLimit: false },
    },
    async (_request, reply) => {
      const [database, cache, schema] = await Promise.all([
        probes.database().then(
          () => 'up' as const,
          () => 'down' as const,
        ),
        probes.cache().catch(() => 'degraded' as const),
        // A check that cannot run (database down) is reported by the database probe.
        probes.schema().catch(() => undefined),
      ]);
      const body: Readiness = {
        status: 'ready',
        checks: {
          database,
          cache,
          ...(probes.replicas === undefined ? {} : { replicas: probes.replicas() }),
        },
      };
      const reason = lifecycle.shuttingDown
        ? 'shutting down'
        : database === 'down'
          ? 'database unreachable'
          : schema;
      if (reason !== undefined) {
        reply.code(503).header('retry-after', '1');
        return { ...body, status: 'unavailable' as const, reason };
      }
      return body;
    },
  );
}
