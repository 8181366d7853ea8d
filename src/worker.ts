import { createServer, type Server } from 'node:http';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { type Config, ConfigError, loadConfig } from './config.js';
import { createDatabase } from './infra/database.js';
import { createLogger } from './infra/logger.js';
import { createMailer } from './infra/mail/mailer.js';
import { createMemoryCounterStore, createRedisCounterStore } from './infra/rate-limit/counter-store.js';
import { createRedis } from './infra/redis.js';
import { startEventLoopWatchdog } from './infra/watchdog.js';
import { createAccountsDeps, createQueue, createWorker, enqueueCacheWarmUp } from './jobs/runtime.js';
import { registerQueueGauge } from './jobs/worker.js';
import { createAuthDeps } from './modules/auth/auth.deps.js';

/**
 * `npm run worker`: the job workers as a process of their own (decision 0062) — what the PM2
 * ecosystem file runs as `shipshape-worker` beside the API cluster, whose workers then set
 * JOBS_IN_PROCESS=false. SIGTERM/SIGINT stop claiming, let the jobs in hand finish (their leases
 * would hand them to another worker otherwise) and exit 0; a second signal exits 1.
 */
async function run(config: Config): Promise<void> {
  const logger = createLogger(config).child({ component: 'worker' });
  const database = createDatabase(config.database, logger.child({ component: 'database' }));
  const redis =
    config.redis.url === undefined
      ? undefined
      : createRedis(config.redis, config.redis.url, logger.child({ component: 'redis' }));
  const counters = redis === undefined ? createMemoryCounterStore() : createRedisCounterStore(redis);
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const auth = createAuthDeps({
    db: database.db,
    engine: database.engine,
    config: config.auth,
    counters,
    registry,
    logger: logger.child({ component: 'auth' }),
  });
  const mailer = createMailer(config.mail, config.env, logger.child({ component: 'mail' }));
  const tracing = config.tracing.enabled
    ? (await import('./infra/tracing.js')).createTracing(config.tracing, config.build)
    : undefined;
  if (database.pgPool !== undefined)
    tracing?.instrumentPgPool(database.pgPool, database.pgPool.options.database ?? 'postgres');
  if (redis !== undefined) tracing?.instrumentRedis(redis.client);
  const queue = createQueue(config, tracing?.traceParent);
  const accounts = createAccountsDeps({
    auth,
    config,
    counters,
    queue,
    logger: logger.child({ component: 'accounts' }),
  });
  const worker = createWorker({
    db: database.db,
    engine: database.engine,
    config,
    queue,
    accounts,
    mailer,
    registry,
    logger: logger.child({ component: 'jobs' }),
    ...(tracing === undefined ? {} : { runner: tracing.runJob }),
  });
  registerQueueGauge(registry, database.db, logger);

  let metricsServer: Server | undefined;
  if (config.jobs.metricsPort > 0) {
    metricsServer = createServer((request, response) => {
      if (request.url !== '/metrics') {
        response.writeHead(404).end();
        return;
      }
      registry
        .metrics()
        .then((text) => response.writeHead(200, { 'content-type': registry.contentType }).end(text))
        .catch(() => response.writeHead(500).end());
    });
    const server = metricsServer;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(config.jobs.metricsPort, config.server.host, () => resolve());
    });
  }

  worker.start();
  await enqueueCacheWarmUp(queue, database.db, config).catch((err: unknown) =>
    logger.warn({ err }, 'could not enqueue the cache warm-up (database down?)'),
  );
  logger.info(
    { event: 'worker_started', workerId: worker.id, concurrency: config.jobs.concurrency },
    'job worker started',
  );
  process.send?.('ready');

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) {
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    stopping = true;
    logger.info({ event: 'worker_stopping', signal }, 'job worker stopping');
    const deadline = setTimeout(() => {
      logger.error('jobs still running at SHUTDOWN_TIMEOUT_MS: exiting (their leases hand them on)');
      process.exit(1);
    }, config.shutdown.timeoutMs);
    deadline.unref();
    worker
      .stop()
      .then(async () => {
        metricsServer?.close();
        mailer.close();
        await tracing?.shutdown();
        await redis?.close();
        await database.close();
        logger.info({ event: 'worker_stopped' }, 'job worker stopped');
        logger.flush?.();
        process.exit(0);
      })
      .catch((err: unknown) => {
        logger.error({ err }, 'job worker stop failed');
        process.exit(1);
      });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

let config: Config;
try {
  config = loadConfig();
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  process.stderr.write(`${err.message}\n`);
  process.exit(1);
}
// A stuck event loop would keep its jobs leased until the leases run out: die and be restarted.
startEventLoopWatchdog(config.watchdogMs);
run(config).catch((err: unknown) => {
  process.stderr.write(
    `Worker start-up failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
  );
  process.exit(1);
});
