import { appServers } from './components/app-servers.js';
import { deployTargets } from './components/deploy-targets.js';
import { monitoring } from './components/monitoring.js';
import { nginxEdge } from './components/nginx.js';
import { pgbouncer } from './components/pgbouncer.js';
import { postgresDatabase, sqliteDatabase } from './components/postgres.js';
import { redisServer } from './components/redis.js';
import { replicatedPostgres } from './components/replicated-postgres.js';
import { localCertificateAuthority } from './components/tls.js';
import type { Component, StageName } from './types.js';

/**
 * The guide's growth stages, each a list of components started in order (stopped in reverse).
 * A later stage is a new entry built from these parts plus its own: `scale` = growth with a
 * replica and PgBouncer before the servers (they add DATABASE_* to `appEnv` and `databases`).
 */
export const growthServers = [
  { name: 'app-1', role: 'primary', weight: 3, host: '127.0.0.2' },
  { name: 'app-2', role: 'primary', weight: 2, host: '127.0.0.3' },
  { name: 'app-3', role: 'backup', weight: 1, host: '127.0.0.4' },
] as const;

/**
 * Growth and later: the database parts, then Redis, the CA, the app servers (PM2 clusters, or
 * empty deploy targets with --deploy-targets), nginx and (--monitoring) Prometheus.
 */
function edgeAndServers(database: Component[]): Component[] {
  return [
    ...database,
    redisServer(),
    localCertificateAuthority(),
    // The app believes X-Forwarded-For only from the edge (nginx connects from 127.0.0.1).
    {
      ...appServers({ servers: growthServers, pm2: true, instances: 1, env: { TRUST_PROXY: '127.0.0.1' } }),
      enabled: (options) => options.deployTargets !== true,
    },
    {
      ...deployTargets({ servers: growthServers, instances: 1, env: { TRUST_PROXY: '127.0.0.1' } }),
      enabled: (options) => options.deployTargets === true,
    },
    nginxEdge(),
    // --monitoring: Prometheus, Alertmanager and the exporters, reading everything above.
    monitoring(),
  ];
}

export const stages: Record<StageName, { description: string; components: () => Component[] }> = {
  prototype: {
    description: 'one process on SQLite',
    components: () => [
      sqliteDatabase(),
      appServers({
        servers: [{ name: 'app-1', host: '127.0.0.1' }],
        pm2: false,
        instances: 1,
        entryPortFromOptions: true,
      }),
    ],
  },
  mvp: {
    description: 'a PM2 cluster on PostgreSQL',
    components: () => [
      postgresDatabase(),
      appServers({
        servers: [{ name: 'app-1', host: '127.0.0.1' }],
        pm2: true,
        instances: 2,
        entryPortFromOptions: true,
      }),
    ],
  },
  growth: {
    description:
      'nginx (TLS from a local CA) in front of two weighted primaries and a backup, each a PM2 cluster, on PostgreSQL and Redis',
    components: () => edgeAndServers([postgresDatabase()]),
  },
  scale: {
    description:
      'growth on a primary of its own with a streaming replica (pg_basebackup) and PgBouncer (transaction mode): the servers write through PgBouncer and read the replica',
    // Decision 0092: the primary is the stack's own cluster (a replica needs one), set up with the
    // production roles; PgBouncer replaces DATABASE_URL; the replica is read directly.
    components: () => edgeAndServers([replicatedPostgres({ replicas: 1 }), pgbouncer()]),
  },
};

export const stageNames = Object.keys(stages) as StageName[];
