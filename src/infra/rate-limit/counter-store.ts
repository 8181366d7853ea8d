import type { Result } from 'ioredis';
import { LRUCache } from 'lru-cache';
import type { RedisHandle } from '../redis.js';

/**
 * Fixed-window counters: the one primitive behind request rate limits and login lockouts.
 * Two implementations behind one interface, tested by one suite: in-process (per process, the
 * default) and Redis (shared by every worker and server). The Redis one falls back to the
 * in-process one while Redis is unavailable, so an outage weakens limits instead of lifting them.
 */

export interface WindowCount {
  /** Hits in the current window, this one included. */
  readonly count: number;
  /** Milliseconds until the window ends and the count starts again from zero. */
  readonly resetInMs: number;
}

export interface CounterStore {
  readonly kind: 'memory' | 'redis';
  /**
   * Counts one hit against `key`; the first hit starts a window of `windowMs`. The in-process
   * store answers synchronously — it runs on every API request, and a promise would cost a turn.
   */
  increment(key: string, windowMs: number): WindowCount | Promise<WindowCount>;
  /** The current window without counting a hit; count 0 when there is none. */
  peek(key: string): Promise<WindowCount>;
  reset(key: string): Promise<void>;
}

interface Window {
  count: number;
  endsAt: number;
}

const noWindow: WindowCount = Object.freeze({ count: 0, resetInMs: 0 });

export function createMemoryCounterStore(maxKeys = 100_000, now: () => number = Date.now): CounterStore {
  // Bounded, so a flood of distinct client addresses cannot grow memory without limit; the least
  // recently used windows go first.
  const windows = new LRUCache<string, Window>({ max: maxKeys });
  const current = (key: string, at: number): Window | undefined => {
    const window = windows.get(key);
    return window !== undefined && window.endsAt > at ? window : undefined;
  };
  return {
    kind: 'memory',
    increment(key, windowMs) {
      const at = now();
      let window = current(key, at);
      if (window === undefined) {
        window = { count: 0, endsAt: at + windowMs };
        windows.set(key, window);
      }
      window.count += 1;
      return { count: window.count, resetInMs: window.endsAt - at };
    },
    async peek(key) {
      const at = now();
      const window = current(key, at);
      return window === undefined ? noWindow : { count: window.count, resetInMs: window.endsAt - at };
    },
    async reset(key) {
      windows.delete(key);
    },
  };
}

// INCR and the expiry in one atomic step; PTTL < 0 also repairs a key that lost its expiry.
const incrementScript = `
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}`;

const peekScript = `
local count = redis.call('GET', KEYS[1])
if not count then return {0, 0} end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then ttl = 0 end
return {tonumber(count), ttl}`;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    counterIncrement(key: string, windowMs: number): Result<[number, number], Context>;
    counterPeek(key: string): Result<[number, number], Context>;
  }
}

export interface ResilientStoreEvents {
  /** Called each time a Redis failure makes a call fall back to the in-process store. */
  onFallback?: (err: unknown) => void;
}

export function createRedisCounterStore(
  redis: RedisHandle,
  fallback: CounterStore = createMemoryCounterStore(),
  events: ResilientStoreEvents = {},
): CounterStore {
  const client = redis.client;
  if (typeof client.counterIncrement !== 'function') {
    client.defineCommand('counterIncrement', { numberOfKeys: 1, lua: incrementScript });
    client.defineCommand('counterPeek', { numberOfKeys: 1, lua: peekScript });
  }
  const key = (name: string) => `counter:${name}`;
  async function withFallback<T>(viaRedis: () => Promise<T>, viaMemory: () => Promise<T>): Promise<T> {
    try {
      return await redis.run(viaRedis);
    } catch (err) {
      events.onFallback?.(err);
      return viaMemory();
    }
  }
  return {
    kind: 'redis',
    increment: (name, windowMs) =>
      withFallback(
        async () => {
          const [count, ttl] = await client.counterIncrement(key(name), windowMs);
          return { count, resetInMs: ttl };
        },
        async () => fallback.increment(name, windowMs),
      ),
    peek: (name) =>
      withFallback(
        async () => {
          const [count, ttl] = await client.counterPeek(key(name));
          return { count, resetInMs: ttl };
        },
        () => fallback.peek(name),
      ),
    reset: (name) =>
      withFallback(
        async () => {
          await client.del(key(name));
          await fallback.reset(name);
        },
        () => fallback.reset(name),
      ),
  };
}
