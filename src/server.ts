import type { FastifyInstance } from 'fastify';
import { buildApp } from './app.js';
import type { Config } from './config.js';
import { acceptedMetricsTokens, startMetricsServer } from './infra/metrics.js';
import { installGracefulShutdown } from './infra/shutdown.js';
import { listenProblem, nextSteps, waitUntilServable } from './infra/startup.js';
import { describeDatabase } from './lib/targets.js';

export interface ServerOptions {
  /** Adds routes before the server starts (test fixtures use it for deliberately slow routes). */
  readonly extend?: (app: FastifyInstance) => void | Promise<void>;
}

/**
 * Builds the app, installs graceful shutdown, listens, and tells the process manager we are ready
 * (PM2's `wait_ready`) once the database answers.
 */
export async function startServer(config: Config, options: ServerOptions = {}): Promise<FastifyInstance> {
  const app = await buildApp(config);
  await options.extend?.(app);
  // Reported to Sentry (when configured) and flushed, within a bounded time, before exiting.
  const fatal = (kind: 'uncaughtException' | 'unhandledRejection', message: string) => (err: unknown) => {
    app.log.fatal({ err }, message);
    const reported = app.errorReporter?.fatal(err, kind) ?? Promise.resolve();
    reported.finally(() => process.exit(1));
  };
  process.on('uncaughtException', fatal('uncaughtException', 'uncaught exception; exiting'));
  process.on('unhandledRejection', fatal('unhandledRejection', 'unhandled promise rejection; exiting'));

  installGracefulShutdown(app, config.shutdown);
  const metricsPort = config.metrics.port;
  if (metricsPort !== undefined) {
    const metricsServer = await startMetricsServer(app.metrics, {
      host: config.server.host,
      port: metricsPort,
      tokens: acceptedMetricsTokens(config.metrics),
      // On this worker's own port, so `npm run pm2:reload` can check every worker, not a random one.
      ready: async () => {
        const res = await app.inject({ method: 'GET', url: '/ready' });
        return { status: res.statusCode, body: res.body };
      },
    }).catch((err: unknown) => {
      throw listenProblem(err, 'METRICS_PORT', config.server.host, metricsPort);
    });
    app.addHook('onClose', () => metricsServer.close());
  }
  await app.listen({ host: config.server.host, port: config.server.port }).catch((err: unknown) => {
    throw listenProblem(err, 'PORT', config.server.host, config.server.port);
  });

  // Ready means able to serve: the database answers and its schema is the one this code needs.
  await waitUntilServable(app.database, config.database, config.database.waitSeconds, app.log);
  process.send?.('ready');
  const address = app.server.address();
  app.log.info(
    {
      engine: app.database.engine,
      database: describeDatabase(config.database),
      cache: app.redis === undefined ? 'memory' : 'redis',
      address,
    },
    'ready',
  );
  if (config.env === 'development' && typeof address === 'object' && address !== null)
    app.log.info(nextSteps(config.server.host, address.port));
  return app;
}
