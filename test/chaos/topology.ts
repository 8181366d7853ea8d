import { execFile } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterCommitAllowanceMs } from '../../src/infra/database-deadline.js';
import { type FaultProxy, startFaultProxy } from '../harness/fault-proxy.js';
import { type RunningPgbouncer, startPgbouncer } from '../harness/pgbouncer.js';
import { ensureBuilt, type Pm2Cluster, startPm2Cluster } from '../harness/pm2.js';
import { freePort } from '../harness/ports.js';
import { startThrowawayRedis, type ThrowawayRedis } from '../harness/redis.js';
import { type ReplicatedPostgres, startReplicatedPostgres } from '../harness/replication.js';
import { send } from '../support/load.js';

const run = promisify(execFile);
const root = new URL('../..', import.meta.url).pathname;

/**
 * What the chaos scenarios run against: a PM2 cluster of the built service (two workers, as on a
 * server) whose PostgreSQL primary and Redis are reached through fault proxies, a streaming replica
 * for reads, all throwaway and on loopback. The machine's PostgreSQL and Redis are never touched.
 */

export interface Customer {
  readonly userId: string;
  readonly login: string;
  readonly password: string;
  accessToken: string;
  refreshToken: string;
}

export interface Product {
  readonly id: string;
  readonly initialStock: number;
}

export interface Topology {
  readonly postgres: ReplicatedPostgres;
  readonly redis: ThrowawayRedis;
  /** In front of the primary, Redis, and PgBouncer (the app reaches PgBouncer through it). */
  readonly proxies: {
    readonly postgres: FaultProxy;
    readonly redis: FaultProxy;
    readonly pgbouncer: FaultProxy;
  };
  /** PgBouncer (the shipped configuration) in front of the primary; the app uses it after `databaseVia('pgbouncer')`. */
  readonly pgbouncer: RunningPgbouncer;
  readonly app: Pm2Cluster;
  readonly port: number;
  /** The primary, directly (not through the proxy): for the data check. */
  readonly databaseUrl: string;
  readonly customers: Customer[];
  readonly products: readonly Product[];
  /** The service's settings that bound every wait (the scenarios' "hang" limit derives from them). */
  readonly limits: { readonly statementTimeoutMs: number; readonly connectTimeoutMs: number };
  /**
   * Points the workers' primary at the fault proxy (the start) or at PgBouncer: rewrites the file
   * DATABASE_URL_FILE names and reloads PM2 (`npm run pm2:reload`, one worker at a time).
   */
  databaseVia(route: 'proxy' | 'pgbouncer'): Promise<void>;
  destroy(): Promise<void>;
}

async function isFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/** Two consecutive free ports (the per-worker metrics servers take METRICS_PORT + instance). */
async function freePortPair(): Promise<number> {
  for (;;) {
    const base = await freePort();
    if (base < 65535 && (await isFree(base + 1))) return base;
  }
}

/**
 * The service's limits in the chaos topology, and the slowest answer they allow: a request's
 * database work ends 5 s after it began, plus at most a COMMIT already sent (its round-trip
 * deadline: statement timeout + 1 s) and the bookkeeping after it (one short allowance, the WAL
 * position): 10 s, even when every round trip is slow. The clients' hang limit is derived from it.
 */
const statementTimeoutMs = 3000;
const requestBudgetMs = 5000;
export const chaosLimits = {
  statementTimeoutMs,
  connectTimeoutMs: 2000,
  requestBudgetMs,
  slowestAnswerMs: requestBudgetMs + statementTimeoutMs + 1000 + afterCommitAllowanceMs,
} as const;

export async function startTopology(
  options: { customers?: number; log?: (line: string) => void } = {},
): Promise<Topology> {
  const log = options.log ?? (() => {});
  const cleanups: Array<() => Promise<void> | void> = [];
  const cleanup = async () => {
    for (const step of cleanups.reverse()) await Promise.resolve(step()).catch(() => {});
  };
  try {
    log('chaos: starting a throwaway primary + streaming replica, and redis-server');
    const postgres = await startReplicatedPostgres();
    cleanups.push(() => postgres.destroy());
    const redis = await startThrowawayRedis();
    cleanups.push(() => redis.destroy());

    const admin = new pg.Client({ connectionString: postgres.primaryUrl() });
    admin.on('error', () => {});
    await admin.connect();
    await admin.query('CREATE DATABASE shipshape_chaos');
    await admin.end();
    const databaseUrl = postgres.primaryUrl('shipshape_chaos');
    // The migrations PM2's workers will require are the built ones: build first.
    await ensureBuilt();
    await run(process.execPath, [join(root, 'dist', 'cli', 'migrate.js')], {
      cwd: root,
      env: { ...process.env, DATABASE_URL: databaseUrl, NODE_ENV: 'test' },
      timeout: 120_000,
    });

    const pgProxy = await startFaultProxy({ name: 'postgres', target: { port: postgres.primary.port } });
    cleanups.push(() => pgProxy.close());
    const redisProxy = await startFaultProxy({ name: 'redis', target: { port: redis.port } });
    cleanups.push(() => redisProxy.close());

    // PgBouncer with the shipped files: the app logs in as the shipped app role, PgBouncer logs in
    // upstream as postgres (the throwaway cluster trusts loopback).
    const appRole = { name: 'shipshape_app', password: randomBytes(16).toString('hex') };
    const pgbouncer = await startPgbouncer({
      upstream: { host: '127.0.0.1', port: postgres.primary.port },
      users: [{ name: 'postgres', password: randomBytes(16).toString('hex') }, appRole],
      databases: {
        shipshape_chaos: `host=127.0.0.1 port=${postgres.primary.port} dbname=shipshape_chaos user=postgres`,
      },
    });
    cleanups.push(() => pgbouncer.stop());
    const pgbouncerProxy = await startFaultProxy({ name: 'pgbouncer', target: { port: pgbouncer.port } });
    cleanups.push(() => pgbouncerProxy.close());
    const secrets = mkdtempSync(join(tmpdir(), 'shipshape-chaos-'));
    cleanups.push(() => rmSync(secrets, { recursive: true, force: true }));
    const databaseUrlFile = join(secrets, 'database_url');
    const routes = {
      proxy: `postgres://postgres@${pgProxy.address}/shipshape_chaos`,
      pgbouncer: pgbouncer
        .url(appRole.name, 'shipshape_chaos')
        .replace(`@127.0.0.1:${pgbouncer.port}/`, `@${pgbouncerProxy.address}/`),
    };
    let route: 'proxy' | 'pgbouncer' = 'proxy';
    writeFileSync(databaseUrlFile, routes.proxy, { mode: 0o600 });

    const port = await freePort();
    log('chaos: starting the service under PM2 (2 workers) behind the fault proxies');
    const app = await startPm2Cluster({
      instances: 2,
      port,
      metricsPort: await freePortPair(),
      env: {
        DATABASE_URL_FILE: databaseUrlFile,
        DATABASE_REPLICA_URLS: postgres.standby.url('shipshape_chaos'),
        DATABASE_STATEMENT_TIMEOUT_MS: String(chaosLimits.statementTimeoutMs),
        DATABASE_REQUEST_BUDGET_MS: String(chaosLimits.requestBudgetMs),
        DATABASE_CONNECT_TIMEOUT_MS: String(chaosLimits.connectTimeoutMs),
        DATABASE_BUDGET_CHECK: 'off',
        DATABASE_POOL_MAX: '10',
        REDIS_URL: `redis://${redisProxy.address}`,
        REDIS_KEY_PREFIX: `chaos:${randomBytes(4).toString('hex')}:`,
        JWT_SECRET: randomBytes(32).toString('hex'),
        LOG_LEVEL: 'info',
        SHUTDOWN_GRACE_MS: '500',
        SHUTDOWN_TIMEOUT_MS: '8000',
        RATE_LIMIT_MAX: '1000000',
        AUTH_RATE_LIMIT_MAX: '1000000',
        // A worker killed mid-order leaves its key locked: a retry takes it over after this long.
        IDEMPOTENCY_LOCK_SECONDS: '10',
      },
    });
    cleanups.push(() => app.destroy());

    log('chaos: registering customers and stocking products');
    const customers: Customer[] = [];
    for (let i = 0; i < (options.customers ?? 8); i++) {
      const name = `chaos${i}x${randomBytes(4).toString('hex')}`;
      const password = `chaos password ${i}`;
      const res = await send(port, {
        method: 'POST',
        path: '/api/auth/register',
        body: { email: `${name}@example.com`, username: name, password },
      });
      if (res.status !== 201) throw new Error(`register answered ${res.status}: ${res.body}`);
      const body = JSON.parse(res.body) as {
        user: { id: string };
        accessToken: string;
        refreshToken: string;
      };
      customers.push({
        userId: body.user.id,
        login: name,
        password,
        accessToken: body.accessToken,
        refreshToken: body.refreshToken,
      });
    }
    const products: Product[] = [];
    const client = new pg.Client({ connectionString: databaseUrl });
    client.on('error', () => {});
    await client.connect();
    try {
      for (let i = 0; i < 4; i++) {
        const product = { id: randomUUID(), initialStock: 1_000_000 };
        await client.query('INSERT INTO products (id, sku, name, price, stock) VALUES ($1, $2, $3, $4, $5)', [
          product.id,
          `CHAOS-${i}-${randomBytes(3).toString('hex')}`,
          `Chaos product ${i}`,
          '9.99',
          product.initialStock,
        ]);
        products.push(product);
      }
    } finally {
      await client.end();
    }
    await postgres.waitForCatchUp();

    return {
      postgres,
      redis,
      proxies: { postgres: pgProxy, redis: redisProxy, pgbouncer: pgbouncerProxy },
      app,
      port,
      databaseUrl,
      customers,
      products,
      limits: chaosLimits,
      pgbouncer,
      async databaseVia(to) {
        if (route === to) return;
        writeFileSync(databaseUrlFile, routes[to], { mode: 0o600 });
        await app.reload();
        route = to;
      },
      destroy: cleanup,
    };
  } catch (err) {
    await cleanup();
    throw err;
  }
}
