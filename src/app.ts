import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { SpanExporter } from '@opentelemetry/sdk-trace-base';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type pg from 'pg';
import type { Logger } from 'pino';
import type { Config } from './config.js';
import { migrateToLatest } from './db/migrator.js';
import { createSchemaMonitor } from './db/schema-status.js';
import { type Cache, createCache } from './infra/cache/cache.js';
import { createLocalTier } from './infra/cache/local-tier.js';
import { createMemoryCacheBackend } from './infra/cache/memory-backend.js';
import { createCacheMetrics } from './infra/cache/metrics.js';
import { createNoCacheBackend } from './infra/cache/none-backend.js';
import { createRedisCacheBackend } from './infra/cache/redis-backend.js';
import { ConnectionBudgetError, checkConnectionBudget } from './infra/connection-budget.js';
import { checkRoleTimeouts, createDatabase, type DatabaseHandle, withTimeout } from './infra/database.js';
import { withRequestBudget } from './infra/database-deadline.js';
import { registerDatabasePoolMetrics } from './infra/database-metrics.js';
import { apiDocs } from './infra/docs.js';
import { applyConnectionLimits } from './infra/http/connection-limits.js';
import { corsPolicy } from './infra/http/cors.js';
import { errorHandling, handleClientError, handleFrameworkError } from './infra/http/errors.js';
import { ProblemSchema, problem, problemContentType } from './infra/http/problem.js';
import { requestIdFor, requestIdHeader } from './infra/http/request-id.js';
import { RequestLogController } from './infra/http/request-log.js';
import { apiSecurityHeaders } from './infra/http/security-headers.js';
import { storableText } from './infra/http/storable-text.js';
import { validation } from './infra/http/validation.js';
import { createLifecycle, type Lifecycle } from './infra/lifecycle.js';
import { createLogger } from './infra/logger.js';
import { createMailer } from './infra/mail/mailer.js';
import {
  acceptedMetricsTokens,
  createMetrics,
  httpMetrics,
  type Metrics,
  metricsRoute,
  unmatchedRoute,
} from './infra/metrics.js';
import {
  type CounterStore,
  createMemoryCounterStore,
  createRedisCounterStore,
} from './infra/rate-limit/counter-store.js';
import { rateLimit } from './infra/rate-limit/rate-limit.js';
import { createReadRouting } from './infra/read-your-writes.js';
import { createRedis, type RedisHandle } from './infra/redis.js';
import { createReplicaRouter } from './infra/replicas.js';
import { registerRuntimeMetrics } from './infra/runtime-metrics.js';
import { createErrorReporter, type ErrorReporter } from './infra/sentry.js';
import { staticFiles } from './infra/static-files.js';
import { createAccountsDeps, createQueue, createWorker, enqueueCacheWarmUp } from './jobs/runtime.js';
import { registerQueueGauge } from './jobs/worker.js';
import { ErrorCode } from './lib/errors.js';
import { accountsRoutes } from './modules/auth/accounts.routes.js';
import { requireVerifiedEmail, startEmailVerification } from './modules/auth/accounts.service.js';
import { createAuthDeps } from './modules/auth/auth.deps.js';
import { authRoutes } from './modules/auth/auth.routes.js';
import { flagsRoutes } from './modules/flags/flags.routes.js';
import { createFeatureFlags, type FeatureFlags } from './modules/flags/flags.service.js';
import { healthRoutes } from './modules/health/health.routes.js';
import { opsRoutes } from './modules/ops/ops.routes.js';
import { createOrderMetrics } from './modules/orders/orders.metrics.js';
import { ordersRoutes } from './modules/orders/orders.routes.js';
import type { OrdersDeps } from './modules/orders/orders.service.js';
import { createProductCache } from './modules/products/products.cache.js';
import { type CatalogDeps, productsRoutes } from './modules/products/products.routes.js';
import { createUserCache } from './modules/users/users.cache.js';
import { usersRoutes } from './modules/users/users.routes.js';
import type { UserRow } from './modules/users/users.table.js';

import './infra/http/auth-context.js';

declare module 'fastify' {
  interface FastifyInstance {
    config: Config;
    database: DatabaseHandle;
    redis: RedisHandle | undefined;
    metrics: Metrics;
    lifecycle: Lifecycle;
    counters: CounterStore;
    cache: Cache;
    /** Sentry, when SENTRY_DSN is set. */
    errorReporter: ErrorReporter | undefined;
    /** Feature flags (src/modules/flags): defined in code, overridden at run time. */
    flags: FeatureFlags;
  }
}

export interface AppOptions {
  /** A logger to use instead of one built from the configuration (tests capture log lines). */
  readonly logger?: Logger;
  /** Adds routes inside the rate-limited /api scope (tests exercise the platform through it). */
  readonly extendApi?: (api: FastifyInstance) => void | Promise<void>;
  /** With TRACING_ENABLED: also export spans here (tests use an in-memory exporter). */
  readonly spanExporter?: SpanExporter;
}

/** Waits for Redis to connect, briefly; the service starts without it and reports the cache degraded. */
async function waitForRedis(redis: RedisHandle, timeoutMs: number, logger: Logger): Promise<void> {
  if (redis.client.status === 'ready') return;
  const ready = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), timeoutMs);
    redis.client.once('ready', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
  if (!ready) logger.warn('Redis not reachable at start-up; continuing without it');
}

/** The budget check must not keep a service from starting while its database is down (it reports 503s). */
async function stateConnectionBudget(
  database: DatabaseHandle,
  config: Config,
  logger: Logger,
): Promise<void> {
  try {
    await withTimeout(
      checkConnectionBudget(database.db, config.database, logger.child({ component: 'database' })),
      2000,
      'connection budget check',
    );
    await withTimeout(
      checkRoleTimeouts(database.db, config.database, logger.child({ component: 'database' })),
      2000,
      'role timeouts check',
    );
  } catch (err) {
    if (err instanceof ConnectionBudgetError) throw err;
    logger.warn({ err }, 'could not check the connection budget (database unreachable?)');
  }
}

/**
 * The composition root: infrastructure first (database, Redis, metrics), then the HTTP platform
 * (ids, headers, CORS, errors, logging, metrics), then the feature modules, registered explicitly.
 */
export async function buildApp(config: Config, options: AppOptions = {}): Promise<FastifyInstance> {
  const logger = options.logger ?? createLogger(config);
  const app = Fastify({
    loggerInstance: logger as FastifyBaseLogger,
    logController: new RequestLogController(config.log.slowRequestMs),
    genReqId: requestIdFor,
    requestIdHeader: false,
    trustProxy: config.server.trustProxy.length > 0 ? [...config.server.trustProxy] : false,
    bodyLimit: config.server.bodyLimitBytes,
    requestTimeout: config.server.requestTimeoutMs,
    keepAliveTimeout: config.server.keepAliveTimeoutMs,
    maxRequestsPerSocket: config.server.maxRequestsPerSocket,
    // Draining is ours to manage (lifecycle.ts, main.ts): keep serving, with Connection: close.
    return503OnClosing: false,
    forceCloseConnections: 'idle',
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
    frameworkErrors: handleFrameworkError,
    clientErrorHandler: handleClientError,
    // A missing Host is answered by the platform hook below (problem+json), not by Node's bare 400.
    http: { requireHostHeader: false },
    routerOptions: { maxParamLength: 200 },
  }).withTypeProvider<TypeBoxTypeProvider>();
  applyConnectionLimits(app.server, config.server, logger.child({ component: 'http' }));
  // OpenTelemetry (decision 0063): loaded and wired only when enabled; off, none of it runs.
  const tracing = config.tracing.enabled
    ? (await import('./infra/tracing.js')).createTracing(config.tracing, config.build, {
        ...(options.spanExporter === undefined ? {} : { exporter: options.spanExporter }),
      })
    : undefined;
  tracing?.instrumentServer(app.server);
  if (tracing !== undefined) tracing.instrumentFastify(app);

  const errorReporter = await createErrorReporter(config.sentry, logger.child({ component: 'sentry' }));
  const database = createDatabase(config.database, logger.child({ component: 'database' }));
  const redis =
    config.redis.url === undefined
      ? undefined
      : createRedis(config.redis, config.redis.url, logger.child({ component: 'redis' }));
  const lifecycle = createLifecycle();
  const metrics = createMetrics(() => lifecycle.inFlight);
  const counters = redis === undefined ? createMemoryCounterStore() : createRedisCounterStore(redis);
  // The cache: in-process by default (per process), Redis when configured (shared by every instance).
  const cacheBackend = !config.cache.enabled
    ? createNoCacheBackend()
    : redis === undefined
      ? createMemoryCacheBackend(config.cache.maxEntries)
      : createRedisCacheBackend(
          redis,
          config.cache.localTier
            ? createLocalTier({
                client: redis.client,
                maxEntries: config.cache.maxEntries,
                logger: logger.child({ component: 'cache' }),
              })
            : undefined,
        );
  const cache = createCache(cacheBackend, {
    metrics: createCacheMetrics(metrics.registry, cacheBackend.kind),
    logger: logger.child({ component: 'cache' }),
    // A CLI command (seed) or another process writing the same SQLite file: seen at the next read.
    ...(database.externalWrites === undefined ? {} : { externalWrites: database.externalWrites }),
  });
  const authBase = createAuthDeps({
    db: database.db,
    engine: database.engine,
    config: config.auth,
    counters,
    registry: metrics.registry,
    logger: logger.child({ component: 'auth' }),
    // Only where every process sees every write at once (decision 0112): through Redis (with the
    // local tier kept coherent by tracking), or on one SQLite file (a write by another process
    // empties the cache). The in-process cache on PostgreSQL is per process, and PM2 runs several:
    // a PATCH on one worker would not reach another's copy of the account.
    ...(cacheBackend.kind === 'redis' || database.externalWrites !== undefined
      ? { userCache: createUserCache(cache, config.cache.userTtlSeconds) }
      : {}),
  });
  // Password reset, email verification and the durable job queue (decisions 0060–0062).
  const mailer = createMailer(config.mail, config.env, logger.child({ component: 'mail' }));
  if (database.pgPool !== undefined)
    tracing?.instrumentPgPool(database.pgPool, database.pgPool.options.database ?? 'postgres');
  if (redis !== undefined) tracing?.instrumentRedis(redis.client);
  const queue = createQueue(config, tracing?.traceParent);
  const accounts = createAccountsDeps({
    auth: authBase,
    config,
    counters,
    queue,
    logger: logger.child({ component: 'accounts' }),
  });
  const auth = {
    ...authBase,
    startEmailVerification: (user: UserRow) => startEmailVerification(accounts, user),
  };
  const worker = config.jobs.inProcess
    ? createWorker({
        db: database.db,
        engine: database.engine,
        config,
        queue,
        accounts,
        mailer,
        registry: metrics.registry,
        logger: logger.child({ component: 'jobs' }),
        ...(tracing === undefined ? {} : { runner: tracing.runJob }),
      })
    : undefined;
  registerQueueGauge(metrics.registry, database.db, logger.child({ component: 'jobs' }));
  const flags = createFeatureFlags({
    db: database.db,
    cache,
    registry: metrics.registry,
    logger: logger.child({ component: 'flags' }),
  });
  registerDatabasePoolMetrics(metrics.registry, database, config.database.poolMax);
  const runtimeMetrics = registerRuntimeMetrics(metrics.registry, config.build);
  const replicas = config.database.replicas;
  const router = createReplicaRouter(database.db, config.database, replicas, {
    logger: logger.child({ component: 'replicas' }),
    registry: metrics.registry,
    ...(tracing === undefined
      ? {}
      : {
          instrumentPool: (pool: pg.Pool, replica: string) =>
            tracing.instrumentPgPool(pool, pool.options.database ?? 'postgres', replica),
        }),
  });
  const reads = createReadRouting({
    router,
    primary: database.db,
    redis,
    // Signed with the current JWT key, verified with the whole ring: rotating it keeps positions valid.
    secrets: [config.auth.jwtSecret, ...config.auth.jwtNextSecrets, ...config.auth.jwtPreviousSecrets],
    // A replica in use has replayed everything older than its time-lag limit (plus the checks'
    // spacing): past that, no replica needs a client's position (read-your-writes.ts).
    ttlSeconds: Math.max(60, Math.ceil(2 * (replicas.maxLagSeconds + (3 * replicas.checkIntervalMs) / 1000))),
    logger: logger.child({ component: 'read-your-writes' }),
  });
  const catalog: CatalogDeps = {
    db: database.db,
    reads,
    currency: config.commerce.currency,
    cache: createProductCache(
      cache,
      {
        productSeconds: config.cache.productTtlSeconds,
        listSeconds: config.cache.productListTtlSeconds,
      },
      () => reads.floor(),
    ),
  };
  const orders: OrdersDeps = {
    db: database.db,
    engine: database.engine,
    currency: config.commerce.currency,
    products: catalog.cache,
    idempotency: {
      ttlMs: config.idempotency.ttlHours * 3_600_000,
      lockMs: config.idempotency.lockSeconds * 1000,
    },
    metrics: createOrderMetrics(metrics.registry),
    flags,
    ...(config.accounts.verificationRequiredFor.includes('orders')
      ? { requireVerifiedEmail: requireVerifiedEmail(accounts, 'orders') }
      : {}),
  };
  if (config.auth.jwtSecretGenerated) {
    logger.warn(
      'JWT_SECRET is not set: using a random key; tokens end with this process and work only in it',
    );
  }

  app.decorate('config', config);
  app.decorate('database', database);
  app.decorate('redis', redis);
  app.decorate('metrics', metrics);
  app.decorate('lifecycle', lifecycle);
  app.decorate('counters', counters);
  app.decorate('cache', cache);
  app.decorate('errorReporter', errorReporter);
  app.decorate('flags', flags);
  app.decorateRequest('auth', null);
  app.addHook('onReady', () => auth.revocations.start());
  app.addHook('onReady', async () => {
    worker?.start();
    await enqueueCacheWarmUp(queue, database.db, config).catch((err: unknown) =>
      logger.warn({ err }, 'could not enqueue the cache warm-up'),
    );
  });
  app.addHook('onReady', async () => router.start());
  app.addHook('onClose', async () => {
    runtimeMetrics.stop();
    await auth.revocations.stop();
    await worker?.stop();
    await tracing?.shutdown();
    mailer.close();
    await router.stop();
    await cacheBackend.close?.();
    await redis?.close();
    await database.close();
    await errorReporter?.close();
  });

  try {
    if (config.database.migrateOnStart) {
      const applied = await migrateToLatest(database.db, database.engine);
      if (applied.length > 0) logger.info({ applied }, 'database migrated');
    }
    if (database.engine === 'postgres') await stateConnectionBudget(database, config, logger);
    if (redis !== undefined) await waitForRedis(redis, config.redis.connectTimeoutMs, logger);
  } catch (err) {
    await app.close();
    throw err;
  }

  // HTTP platform: these hooks run for every route, 404s included.
  // The platform's work on every request, in one hook (each hook costs every request something):
  // security headers, the request id, in-flight tracking (draining, metrics) and CORS.
  const cors = corsPolicy(config.cors.origins);
  app.addHook('onRequest', (request, reply, done) => {
    reply.headers(apiSecurityHeaders);
    reply.header(requestIdHeader, request.id);
    lifecycle.track(reply.raw);
    if (cors?.(request, reply) === 'preflight-answered') return;
    // HTTP/1.1 requires Host (RFC 9112 §3.2); Node's own check is turned off to answer it here.
    if (request.headers.host === undefined && request.raw.httpVersion === '1.1') {
      reply.code(400).type(problemContentType);
      reply.send(problem(400, ErrorCode.VALIDATION_FAILED, 'The Host header is required.', request.id));
      return;
    }
    done();
  });
  // PostgreSQL: the request's database work runs under its deadline (database-deadline.ts), from
  // when its body has arrived. Not in onRequest: the body's stream events run in the socket's async
  // context, not the hook's, and the handler after them would run without the deadline.
  const budgetMs = database.engine === 'postgres' ? config.database.requestBudgetMs : 0;
  if (budgetMs > 0)
    app.addHook('preValidation', (_request, _reply, done) => withRequestBudget(budgetMs, done));
  validation(app);
  storableText(app);
  errorHandling(
    app,
    errorReporter &&
      ((error, request, status) =>
        errorReporter.requestFailed(error, {
          id: request.id,
          method: request.method,
          route: request.routeOptions.url ?? unmatchedRoute,
          status,
        })),
  );
  httpMetrics(app, metrics);
  app.removeContentTypeParser('text/plain');
  app.addSchema(ProblemSchema);

  if (config.server.docsEnabled) await apiDocs(app, config.build.version);
  if (
    config.env === 'production' &&
    config.metrics.port === undefined &&
    config.metrics.token === undefined
  ) {
    // Decision 0023: loud, not fatal — a deployment may already close /metrics at the proxy.
    logger.warn(
      { event: 'metrics_unprotected' },
      'SECURITY: /metrics is public on the main port in production; set METRICS_TOKEN, or METRICS_PORT on a private interface, or block /metrics at the proxy',
    );
  }
  // With a metrics port of its own, /metrics is served there only: on the shared main port a
  // scrape would see one random worker's numbers (guide correction 9).
  if (config.metrics.port === undefined) metricsRoute(app, metrics, acceptedMetricsTokens(config.metrics));
  const schema = createSchemaMonitor(database.db, database.engine);
  healthRoutes(app, lifecycle, {
    database: () => database.ping(1000),
    cache: () => cache.status(),
    ...(router.configured ? { replicas: () => (router.serving() ? 'up' : 'degraded') } : {}),
    schema: () => schema.problem(),
  });
  await staticFiles(app, config.server.staticDir);

  await app.register(
    async (api) => {
      reads.hooks(api);
      rateLimit(api, counters, {
        name: 'api',
        max: config.rateLimit.max,
        windowMs: config.rateLimit.windowMs,
        // Batched through Redis within a stated error; the auth limit below stays exact (0105).
        localAllowance: Math.floor((config.rateLimit.max * config.rateLimit.localPercent) / 100),
      });
      const authLimit = {
        name: 'auth',
        max: config.rateLimit.authMax,
        windowMs: config.rateLimit.authWindowMs,
      };
      await api.register(async (scope) => authRoutes(scope, auth, authLimit), { prefix: '/auth' });
      await api.register(async (scope) => accountsRoutes(scope, accounts, authLimit), { prefix: '/auth' });
      await api.register(async (scope) => usersRoutes(scope, auth, authLimit), { prefix: '/users' });
      await api.register(async (scope) => productsRoutes(scope, auth, catalog), { prefix: '/products' });
      await api.register(async (scope) => ordersRoutes(scope, auth, orders, reads), { prefix: '/orders' });
      await api.register(async (scope) => flagsRoutes(scope, auth, database.db, flags), { prefix: '/flags' });
      await api.register(
        async (scope) =>
          opsRoutes(scope, auth, {
            registry: metrics.registry,
            build: config.build,
            appInstance: config.metrics.instance,
          }),
        { prefix: '/ops' },
      );
      await options.extendApi?.(api);
    },
    { prefix: '/api' },
  );

  return app;
}
