import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import type { Level, Logger } from 'pino';
import { buildApp } from '../src/app.js';
import { type Config, loadConfig } from '../src/config.js';
import { createLogger } from '../src/infra/logger.js';
import { createTestDatabase } from './harness/postgres.js';
import { prepareDatabase } from './harness/roles.js';
import { redisUrl, type Service, skipUnless } from './harness/services.js';

export type EngineName = 'sqlite' | 'postgres';

/** The engine matrix every component suite runs on. */
export const engines: readonly EngineName[] = (['sqlite', 'postgres'] as const).filter(
  // TEST_ENGINES=postgres narrows the matrix (the PgBouncer suite reruns the PostgreSQL half).
  (engine) => process.env.TEST_ENGINES === undefined || process.env.TEST_ENGINES.split(',').includes(engine),
);

/** Skip message (or false) for a suite on this engine, failing under CI when the server is missing. */
export function skipEngine(engine: EngineName, ...extra: Service[]): Promise<string | false> {
  return skipUnless(...(engine === 'postgres' ? (['postgres'] as Service[]) : []), ...extra);
}

export interface TestAppOptions {
  readonly engine?: EngineName;
  /** Use Redis: true for the machine's server (with a key prefix of our own), or a URL. */
  readonly redis?: boolean | string;
  /** Extra environment, as a deployment would set it. */
  readonly env?: Readonly<Record<string, string>>;
  readonly logger?: Logger;
  /** Routes the test needs on top of the real ones (added before the app starts). */
  readonly extend?: (app: FastifyInstance) => void | Promise<void>;
  /** Routes inside the rate-limited /api scope. */
  readonly extendApi?: (api: FastifyInstance) => void | Promise<void>;
  /** With TRACING_ENABLED=true: spans also go here. */
  readonly spanExporter?: import('@opentelemetry/sdk-trace-base').SpanExporter;
}

export interface TestDatabaseEnv {
  readonly env: Record<string, string>;
  cleanup(): Promise<void>;
}

/** An empty database on the requested engine, as the environment variables that point at it. */
export async function testDatabaseEnv(engine: EngineName): Promise<TestDatabaseEnv> {
  if (engine === 'postgres') {
    const database = await createTestDatabase();
    const appBase = process.env.TEST_DATABASE_APP_URL;
    const ownerBase = process.env.TEST_DATABASE_OWNER_URL;
    if (appBase !== undefined && ownerBase !== undefined) {
      // Production's layout (test/db/pgbouncer.test.ts): owned and migrated by shipshape_owner, the
      // service as shipshape_app, both through the URLs given (PgBouncer).
      try {
        await prepareDatabase(database.url, databaseUrlFor(ownerBase, database.name));
      } catch (err) {
        await database.drop();
        throw err;
      }
      return {
        env: { DATABASE_URL: databaseUrlFor(appBase, database.name), DATABASE_MIGRATE_ON_START: 'false' },
        cleanup: () => database.drop(),
      };
    }
    return {
      env: { DATABASE_URL: database.url, DATABASE_MIGRATE_ON_START: 'true' },
      cleanup: () => database.drop(),
    };
  }
  const dir = mkdtempSync(join(tmpdir(), 'shipshape-sqlite-'));
  return {
    env: { SQLITE_PATH: join(dir, 'test.db') },
    cleanup: async () => rmSync(dir, { recursive: true, force: true }),
  };
}

function databaseUrlFor(base: string, database: string): string {
  const url = new URL(base);
  url.pathname = `/${database}`;
  return url.toString();
}

export function testConfig(env: Readonly<Record<string, string>> = {}): Config {
  return loadConfig({
    NODE_ENV: 'test',
    LOG_LEVEL: 'silent',
    SHUTDOWN_GRACE_MS: '0',
    // Cheap hashing keeps hundreds of registrations fast; the production parameters have their own test.
    ARGON2_MEMORY_KIB: '1024',
    ARGON2_ITERATIONS: '1',
    BCRYPT_COST: '4',
    JWT_SECRET: 'test-secret-test-secret-test-secret-0123456789',
    // Suites that test limits set their own; the rest must not trip over them.
    RATE_LIMIT_MAX: '1000000',
    AUTH_RATE_LIMIT_MAX: '1000000',
    // The warm-up job reads the service over HTTP; test apps listen nowhere (suites that test it set it).
    CACHE_WARM_UP_PAGES: '0',
    ...env,
  });
}

/**
 * A Redis key prefix of the caller's own, under the test run's (`scripts/test.mjs` sets
 * SHIPSHAPE_TEST_KEY_PREFIX and fails the run when any key is left under it). Delete what you wrote
 * with `deleteKeys` when done; `buildTestApp` does it for the prefix its app uses.
 */
export function testKeyPrefix(label = 'app'): string {
  const run = process.env.SHIPSHAPE_TEST_KEY_PREFIX ?? 'test:';
  return `${run}${label}:${process.pid}:${randomBytes(4).toString('hex')}:`;
}

/** Deletes every key under a prefix (tests only: SCAN is fine here, never in the service). */
export async function deleteKeys(url: string, prefix: string): Promise<void> {
  const client = new Redis(url, { maxRetriesPerRequest: 1, retryStrategy: () => null });
  client.on('error', () => {});
  try {
    let cursor = '0';
    do {
      const [next, keys] = await client.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length > 0) await client.del(...keys);
    } while (cursor !== '0');
  } catch {
    // The server may be gone (chaos tests); its keys went with it.
  } finally {
    client.disconnect();
  }
}

/**
 * A real app on a fresh database (SQLite file or PostgreSQL database of its own), optionally on
 * Redis under a key prefix of its own. Closing the app drops the database and the keys.
 */
export async function buildTestApp(options: TestAppOptions = {}): Promise<FastifyInstance> {
  const database = await testDatabaseEnv(options.engine ?? 'sqlite');
  const redis = options.redis === true ? redisUrl : options.redis === false ? undefined : options.redis;
  const keyPrefix = testKeyPrefix();
  const config = testConfig({
    ...database.env,
    ...(redis === undefined ? {} : { REDIS_URL: redis, REDIS_KEY_PREFIX: keyPrefix }),
    // No test slows the machine's Redis, so a command that outlives the service's 250 ms default
    // there is this test process not reading the reply in time (two hogged cores, a burst of
    // requests holding the event loop): the timer fires before the reply is read, the cache counts
    // an error and loads again. Suites that fault Redis use a throwaway server and keep the default.
    ...(options.redis === true ? { REDIS_COMMAND_TIMEOUT_MS: '10000' } : {}),
    ...options.env,
  });
  let app: FastifyInstance;
  try {
    app = await buildApp(config, {
      ...(options.logger === undefined ? {} : { logger: options.logger }),
      ...(options.extendApi === undefined ? {} : { extendApi: options.extendApi }),
      ...(options.spanExporter === undefined ? {} : { spanExporter: options.spanExporter }),
    });
  } catch (err) {
    await database.cleanup();
    throw err;
  }
  // After the app's own close, not in an onClose hook: Fastify runs those last-added first, so a
  // hook added here would drop the database and delete the keys while the app's job worker and
  // rate-limit batches (stopped by its own hook) could still write (a counter key left behind).
  const close = app.close.bind(app);
  let closed: Promise<void> | undefined;
  const closeAndCleanUp = async (): Promise<void> => {
    try {
      await close();
    } finally {
      await database.cleanup();
      // The prefix in force: the test's own when it shares one between apps (env), else ours.
      if (redis !== undefined) await deleteKeys(redis, config.redis.keyPrefix);
    }
  };
  Object.assign(app, { close: () => (closed ??= closeAndCleanUp()) });
  await options.extend?.(app);
  await app.ready();
  return app;
}

/** A counter's value in the app's own registry (0 when the series does not exist yet). */
export async function appMetric(
  app: FastifyInstance,
  name: string,
  labels: Record<string, string>,
): Promise<number> {
  const found = app.metrics.registry.getSingleMetric(name);
  if (found === undefined) return 0;
  const { values } = await found.get();
  return values.find((v) => Object.entries(labels).every(([k, want]) => v.labels[k] === want))?.value ?? 0;
}

/** One cache's lookups (hits, misses) and loads from the source, by its metrics label. */
export const cacheCounts = async (app: FastifyInstance, cache: string) => ({
  hit: await appMetric(app, 'cache_requests_total', { cache, result: 'hit' }),
  miss: await appMetric(app, 'cache_requests_total', { cache, result: 'miss' }),
  loads: await appMetric(app, 'cache_loads_total', { cache }),
});

/**
 * Two apps on one PostgreSQL database under one Redis key prefix: two servers of one deployment.
 * `close` closes both and drops the database.
 */
export async function buildTwoInstances(label: string): Promise<{
  a: FastifyInstance;
  b: FastifyInstance;
  close: () => Promise<void>;
}> {
  const database = await testDatabaseEnv('postgres');
  const env = { ...database.env, REDIS_KEY_PREFIX: testKeyPrefix(label) };
  const apps: FastifyInstance[] = [];
  const close = async () => {
    for (const app of apps) await app.close();
    await database.cleanup();
  };
  try {
    for (let i = 0; i < 2; i++) apps.push(await buildTestApp({ engine: 'postgres', redis: true, env }));
  } catch (err) {
    await close();
    throw err;
  }
  const [a, b] = apps as [FastifyInstance, FastifyInstance];
  return { a, b, close };
}

export interface CapturedLogs {
  readonly logger: Logger;
  readonly lines: Array<Record<string, unknown>>;
  readonly text: () => string;
}

/** The service's logger (same redaction), writing to lines the test can read. */
export function captureLogs(level: Level = 'info', options: { traceIds?: boolean } = {}): CapturedLogs {
  const raw: string[] = [];
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk, _encoding, callback) {
      const text = chunk.toString();
      raw.push(text);
      for (const line of text.split('\n')) if (line.trim() !== '') lines.push(JSON.parse(line));
      callback();
    },
  });
  const logger = createLogger(
    {
      env: 'test',
      log: { level, slowRequestMs: 1000, pm2: undefined },
      tracing: { enabled: options.traceIds === true },
    },
    stream,
  );
  return { logger, lines, text: () => raw.join('') };
}
