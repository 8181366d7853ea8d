import { readFileSync } from 'node:fs';
import type { Server } from 'node:http';
import type { Logger } from 'pino';
import type { Config } from '../../config.js';

/**
 * What one process accepts from slow or numerous clients (security probe 2026-12-02, finding 3):
 *
 * - header and request timeouts enforced at most `connectionsCheckIntervalMs` late (Node checks
 *   them on an interval, 30 s by default, so a 15 s limit used to act at 15–45 s);
 * - at most `maxConnections` open connections, kept below the file-descriptor limit so the process
 *   can still reach its database and Redis while a flood is held off; connections above the cap
 *   are closed as they arrive, with one warning per 10 s saying how many;
 * - keep-alive: idle lifetime (KEEP_ALIVE_TIMEOUT_MS) and requests per connection (Fastify's
 *   maxRequestsPerSocket, set in app.ts).
 *
 * Per-client limits belong to the proxy in front (nginx limit_conn / limit_req): one process cannot
 * tell a flood from many clients behind one address. See docs/decisions/0022-connection-limits.md.
 */
export function applyConnectionLimits(server: Server, config: Config['server'], logger: Logger): void {
  server.headersTimeout = config.headersTimeoutMs;
  server.requestTimeout = config.requestTimeoutMs;
  // Read by Node when the server starts listening (a createServer option; @types/node 20 lacks the
  // property, which Node 18.12+ has).
  (server as Server & { connectionsCheckingInterval: number }).connectionsCheckingInterval =
    config.connectionsCheckIntervalMs;

  const fdLimit = openFileLimit();
  // Leave room for the database pool, Redis, log files and the metrics listener.
  const reserve = fdLimit === undefined ? 0 : Math.max(64, Math.floor(fdLimit / 10));
  const cap =
    fdLimit === undefined ? config.maxConnections : Math.min(config.maxConnections, fdLimit - reserve);
  if (cap < config.maxConnections) {
    logger.warn(
      { configured: config.maxConnections, maxConnections: cap, openFileLimit: fdLimit },
      'MAX_CONNECTIONS lowered to fit the open-file limit (raise `ulimit -n` / LimitNOFILE to allow more)',
    );
  }
  server.maxConnections = Math.max(1, cap);

  let dropped = 0;
  let reported = 0;
  server.on('drop', () => {
    dropped += 1;
    const now = performance.now();
    if (now - reported < 10_000) return;
    reported = now;
    logger.warn(
      { event: 'connection_limit_reached', maxConnections: server.maxConnections, dropped },
      'connection limit reached: new connections are being closed',
    );
    dropped = 0;
  });
}

/** The soft limit on open files of this process (Linux), or undefined where it cannot be read. */
export function openFileLimit(): number | undefined {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('Max open files'));
    const soft = line?.split(/\s{2,}/)[1];
    const n = Number(soft);
    return Number.isInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}
