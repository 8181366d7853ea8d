import type { FastifyInstance } from 'fastify';

/** Whether the process is draining. Readiness fails and keep-alive ends while it is. */
export interface Lifecycle {
  readonly shuttingDown: boolean;
  beginShutdown(): void;
}

export function createLifecycle(): Lifecycle {
  let shuttingDown = false;
  return {
    get shuttingDown() {
      return shuttingDown;
    },
    beginShutdown() {
      shuttingDown = true;
    },
  };
}

/**
 * While draining, every response says `Connection: close`: keep-alive clients finish the request
 * they sent and reconnect elsewhere, instead of sending on a socket we are about to close.
 */
export function closeConnectionsWhileDraining(app: FastifyInstance, lifecycle: Lifecycle): void {
  app.addHook('onSend', (_request, reply, payload, done) => {
    if (lifecycle.shuttingDown) reply.header('connection', 'close');
    done(null, payload);
  });
}
