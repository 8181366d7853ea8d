import { Gauge, type Registry } from 'prom-client';
import type { DatabaseHandle } from './database.js';

/**
 * Connection-pool gauges, read from the pool at scrape time (PostgreSQL; SQLite has no pool, so
 * nothing is registered). Waiting requests above zero mean the pool is the bottleneck.
 */
export function registerDatabasePoolMetrics(
  registry: Registry,
  database: DatabaseHandle,
  poolMax: number,
): void {
  if (database.poolStats() === undefined) return;
  new Gauge({
    name: 'db_pool_connections_max',
    help: 'Most PostgreSQL connections the pool opens (DATABASE_POOL_MAX).',
    registers: [registry],
  }).set(poolMax);
  new Gauge({
    name: 'db_pool_connections_in_use',
    help: 'PostgreSQL connections checked out of the pool.',
    registers: [registry],
    collect() {
      const stats = database.poolStats();
      if (stats !== undefined) this.set(stats.total - stats.idle);
    },
  });
  new Gauge({
    name: 'db_pool_connections_idle',
    help: 'Open PostgreSQL connections waiting in the pool.',
    registers: [registry],
    collect() {
      const stats = database.poolStats();
      if (stats !== undefined) this.set(stats.idle);
    },
  });
  new Gauge({
    name: 'db_pool_waiting_requests',
    help: 'Queries waiting for a pool connection.',
    registers: [registry],
    collect() {
      const stats = database.poolStats();
      if (stats !== undefined) this.set(stats.waiting);
    },
  });
}
