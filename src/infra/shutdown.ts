import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance } from 'fastify';
import type { Config } from '../config.js';

/**
 * Graceful shutdown on SIGTERM and SIGINT (KNOWN-DEFECTS 6):
 *
 * 1. readiness fails at once and every response says `Connection: close`;
 * 2. for `graceMs` the server keeps serving, so load balancers and keep-alive clients move away
 *    without a single reset;
 * 3. the listener closes, idle sockets close, in-flight requests finish;
 * 4. the database pool and Redis close; the process exits 0.
 *
 * A second signal, or `timeoutMs` after the first, forces exit code 1.
 */
export function installGracefulShutdown(
  app: FastifyInstance,
  config: Config['shutdown'],
  exit: (code: number) => void = (code) => process.exit(code),
): void {
  let stopping = false;

  const shutdown = (signal: string) => {
    if (stopping) {
      app.log.warn({ signal }, 'second signal during shutdown: exiting now');
      exit(1);
      return;
    }
    stopping = true;
    app.log.info({ signal, graceMs: config.graceMs, timeoutMs: config.timeoutMs }, 'shutting down');
    app.lifecycle.beginShutdown();
    const deadline = setTimeout(() => {
      app.log.error({ timeoutMs: config.timeoutMs }, 'shutdown timed out with requests still in flight');
      exit(1);
    }, config.timeoutMs);
    deadline.unref();

    sleep(Math.min(config.graceMs, config.timeoutMs))
      .then(() => app.close())
      .then(
        () => {
          app.log.info('shutdown complete');
          exit(0);
        },
        (err: unknown) => {
          app.log.error({ err }, 'shutdown failed');
          exit(1);
        },
      );
  };

  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  // PM2 on Windows asks by message instead of a signal.
  process.on('message', (message) => {
    if (message === 'shutdown') shutdown('shutdown message');
  });
}
