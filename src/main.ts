import { setTimeout as sleep } from 'node:timers/promises';
import { buildApp } from './app.js';
import { ConfigError, loadConfig } from './config.js';
import { installGracefulShutdown } from './infra/shutdown.js';

/**
 * Process entry: configuration → app → listen → tell the process manager we are ready (PM2's
 * `wait_ready`) once the database answers.
 */
async function main(): Promise<void> {
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(1);
    }
    throw err;
  }

  const app = await buildApp(config);
  process.on('uncaughtException', (err) => {
    app.log.fatal({ err }, 'uncaught exception; exiting');
    process.exit(1);
  });
  process.on('unhandledRejection', (err) => {
    app.log.fatal({ err }, 'unhandled promise rejection; exiting');
    process.exit(1);
  });

  installGracefulShutdown(app, config.shutdown);
  await app.listen({ host: config.server.host, port: config.server.port });

  // Ready means able to serve: keep asking the database until it answers.
  for (let attempt = 1; ; attempt++) {
    try {
      await app.database.ping(2000);
      break;
    } catch (err) {
      if (attempt === 1) app.log.warn({ err }, 'database not reachable yet; waiting before reporting ready');
      await sleep(1000);
    }
  }
  process.send?.('ready');
  app.log.info({ engine: app.database.engine, cache: app.redis === undefined ? 'memory' : 'redis' }, 'ready');
}

main().catch((err: unknown) => {
  process.stderr.write(
    `Start-up failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
  );
  process.exit(1);
});
