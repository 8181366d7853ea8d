import type { Server } from 'node:http';
import { Server as NetServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance } from 'fastify';
import type { Config } from '../config.js';

/** How long a connection may sit idle after the listener closes before we close it for the client. */
const idleCloseAfterMs = 1000;

function connectionCount(server: Server): Promise<number> {
  return new Promise((resolve) => server.getConnections((err, count) => resolve(err ? 0 : count)));
}

/**
 * Stops accepting connections and waits for the open ones to end. Node's http `server.close()`
 * would also destroy idle sockets at once — including ones whose first request is already on the
 * wire, which the client sees as a reset. So the listener is closed on its own, every response
 * already says `Connection: close`, and only sockets still idle a second later are closed.
 */
export async function drainConnections(server: Server): Promise<void> {
  if (!server.listening) return;
  NetServer.prototype.close.call(server);
  const started = Date.now();
  let idleClosed = false;
  while ((await connectionCount(server)) > 0) {
    if (!idleClosed && Date.now() - started >= idleCloseAfterMs) {
      server.closeIdleConnections();
      idleClosed = true;
    }
    await sleep(20);
  }
}

/**
 * Graceful shutdown on SIGTERM and SIGINT (guide correction 6):
 *
 * 1. readiness fails at once and every response says `Connection: close`;
 * 2. for `graceMs` the server keeps serving, so load balancers and keep-alive clients move away
 *    without a single reset;
 * 3. the listener closes and in-flight requests finish; sockets still idle after a second close;
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
      .then(() => drainConnections(app.server))
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
