import type { ServerResponse } from 'node:http';

/**
 * Whether the process is draining, and which responses are still in flight. Readiness fails and
 * keep-alive ends while draining; the in-flight count is also a metric.
 */
export interface Lifecycle {
  readonly shuttingDown: boolean;
  /** Responses started and not yet finished (or abandoned by their client). */
  readonly inFlight: number;
  /** Follows a response until it closes; while draining, it will end its connection. */
  track(response: ServerResponse): void;
  /**
   * Starts draining: from now on every response says `Connection: close`, including those already
   * in flight, so keep-alive clients reconnect elsewhere instead of sending on a socket about to close.
   */
  beginShutdown(): void;
}

export function createLifecycle(): Lifecycle {
  let shuttingDown = false;
  const responses = new Set<ServerResponse>();
  const close = (response: ServerResponse) => {
    if (!response.headersSent) response.setHeader('connection', 'close');
  };
  return {
    get shuttingDown() {
      return shuttingDown;
    },
    get inFlight() {
      return responses.size;
    },
    track(response) {
      responses.add(response);
      // 'close' fires exactly once per response, whether it finished or its client went away.
      response.once('close', () => responses.delete(response));
      if (shuttingDown) close(response);
    },
    beginShutdown() {
      shuttingDown = true;
      for (const response of responses) close(response);
    },
  };
}
