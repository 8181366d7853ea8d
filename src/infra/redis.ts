import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Config } from '../config.js';

export class RedisUnavailableError extends Error {
  constructor(message = 'Redis is unavailable') {
    super(message);
    this.name = 'RedisUnavailableError';
  }
}

export type BreakerState = 'closed' | 'open' | 'half-open';

export interface RedisHandle {
  readonly client: Redis;
  /** False while disconnected or while the circuit breaker is open. */
  available(): boolean;
  breakerState(): BreakerState;
  /**
   * Runs commands through the circuit breaker: fails at once with RedisUnavailableError when Redis
   * is known to be down, so callers fall back without waiting for a timeout (guide correction 14).
   */
  run<T>(operation: (client: Redis) => Promise<T>): Promise<T>;
  ping(timeoutMs: number): Promise<void>;
  /** Called with every breaker transition (metrics and logs). */
  onStateChange(listener: (state: BreakerState) => void): void;
  close(): Promise<void>;
}

export interface BreakerOptions {
  /** Consecutive failures that open the breaker. */
  readonly failureThreshold: number;
  /** How long the breaker stays open before letting one probe through. */
  readonly openMs: number;
}

export const defaultBreaker: BreakerOptions = { failureThreshold: 3, openMs: 2000 };

/** A minimal circuit breaker: closed → open after N straight failures → half-open probe → closed. */
export function createBreaker(options: BreakerOptions, now: () => number = Date.now) {
  let state: BreakerState = 'closed';
  let failures = 0;
  let openedAt = 0;
  let probeInFlight = false;
  const listeners: Array<(state: BreakerState) => void> = [];

  const transition = (next: BreakerState) => {
    if (next === state) return;
    state = next;
    for (const listener of listeners) listener(next);
  };

  return {
    state: (): BreakerState => {
      if (state === 'open' && now() - openedAt >= options.openMs) transition('half-open');
      return state;
    },
    /** Whether a call may go ahead; in half-open state only one probe at a time. */
    tryAcquire(): boolean {
      const current = this.state();
      if (current === 'closed') return true;
      if (current === 'half-open' && !probeInFlight) {
        probeInFlight = true;
        return true;
      }
      return false;
    },
    success(): void {
      failures = 0;
      probeInFlight = false;
      transition('closed');
    },
    failure(): void {
      probeInFlight = false;
      failures += 1;
      if (state === 'half-open' || failures >= options.failureThreshold) {
        openedAt = now();
        transition('open');
      }
    },
    onStateChange(listener: (state: BreakerState) => void): void {
      listeners.push(listener);
    },
  };
}

/**
 * The shared Redis connection. Commands never queue while disconnected and time out quickly, so a
 * Redis outage costs a request at most one short timeout before the breaker opens, and nothing
 * after that.
 */
export function createRedis(
  config: Config['redis'],
  url: string,
  logger: Logger,
  breakerOptions: BreakerOptions = defaultBreaker,
): RedisHandle {
  const client = new Redis(url, {
    keyPrefix: config.keyPrefix,
    connectTimeout: config.connectTimeoutMs,
    commandTimeout: config.commandTimeoutMs,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    // Keep reconnecting forever, backing off to one attempt a second.
    retryStrategy: (times) => Math.min(50 * 2 ** times, 1000),
    lazyConnect: false,
  });
  const breaker = createBreaker(breakerOptions);
  let reportedDown = false;

  client.on('ready', () => {
    if (reportedDown) logger.info('Redis connection restored');
    reportedDown = false;
  });
  // ioredis emits an error on every failed reconnect; log the outage once, not once a second.
  client.on('error', (err) => {
    if (!reportedDown) logger.warn({ err }, 'Redis connection failed; serving without it until it returns');
    reportedDown = true;
  });
  breaker.onStateChange((state) => logger.info({ state }, 'Redis circuit breaker changed state'));

  const available = () => client.status === 'ready' && breaker.state() !== 'open';

  return {
    client,
    available,
    breakerState: () => breaker.state(),
    async run(operation) {
      if (client.status !== 'ready' || !breaker.tryAcquire()) throw new RedisUnavailableError();
      try {
        const result = await operation(client);
        breaker.success();
        return result;
      } catch (err) {
        breaker.failure();
        throw err;
      }
    },
    async ping(timeoutMs) {
      if (client.status !== 'ready') throw new RedisUnavailableError(`Redis is ${client.status}`);
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          client.ping(),
          new Promise((_, reject) => {
            timer = setTimeout(() => reject(new Error('Redis ping timed out')), timeoutMs);
          }),
        ]);
      } finally {
        clearTimeout(timer);
      }
    },
    onStateChange: (listener) => breaker.onStateChange(listener),
    async close() {
      try {
        await client.quit();
      } catch {
        // Already disconnected: nothing to flush.
        client.disconnect();
      }
    },
  };
}
