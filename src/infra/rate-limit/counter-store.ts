import { ReplyError, type Result } from 'ioredis';
import { LRUCache } from 'lru-cache';
import { type RedisHandle, RedisUnavailableError } from '../redis.js';

/**
 * Fixed-window counters: the one primitive behind request rate limits and login lockouts.
 * Two implementations behind one interface, tested by one suite: in-process (per process, the
 * default) and Redis (shared by every worker and server). The Redis one falls back to the
 * in-process one while Redis is unavailable, so an outage weakens limits instead of lifting them.
 *
 * A Redis increment with an `allowance` (decision 0105) is answered without a round trip: this
 * process counts the hit locally and sends its hits to Redis in batches (INCRBY, one pipeline for
 * every key touched), at the latest every `syncMs` and as soon as half the allowance is waiting. A
 * hit that would leave more than `allowance` of this process's hits unknown to Redis waits for
 * Redis instead. So no hit is rejected before the limit was reached across all processes, and the
 * shared budget is exceeded by at most (processes × allowance) per key and window.
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
   * `allowance`: how many of this process's hits may be counted before Redis has them (0, the
   * default: every hit reaches Redis before it is answered); the in-process store is always exact.
   */
  increment(key: string, windowMs: number, allowance?: number): WindowCount | Promise<WindowCount>;
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

// INCRBY and the expiry in one atomic step; PTTL < 0 also repairs a key that lost its expiry.
const incrementScript = `
local count = redis.call('INCRBY', KEYS[1], ARGV[2] or 1)
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
    counterIncrement(key: string, windowMs: number, by?: number): Result<[number, number], Context>;
    counterPeek(key: string): Result<[number, number], Context>;
  }
}

export interface ResilientStoreEvents {
  /** Called each time a Redis failure makes a call fall back to the in-process store. */
  onFallback?: (err: unknown) => void;
  /** Longest a locally counted hit waits before it is sent to Redis (default 50 ms). */
  syncMs?: number;
}

/** A key's hits as this process knows them, for increments with an allowance. */
interface Batched {
  /** Redis's count after this process's last acknowledged batch. */
  synced: number;
  /** Hits sent to Redis, not yet acknowledged. */
  sent: number;
  /** Hits counted here, not yet sent. */
  unsent: number;
  /**
   * Hits whose batch failed in flight (a timeout: Redis may or may not have counted them). Never
   * sent again, so Redis never counts a hit twice; this process keeps counting them in its view.
   */
  lost: number;
  endsAt: number;
  windowMs: number;
  /** Bumped when the window ends here: a late reply about the old window does not set the count. */
  window: number;
  /** Hits waiting for the batch that carries them: resolved with their exact counts. */
  waiting: Array<(count: WindowCount) => void>;
}

/** One key's hits in a batch on its way to Redis. */
interface InFlight {
  readonly name: string;
  readonly state: Batched;
  readonly by: number;
  /** The key's window when the batch left: a reply about an older window does not set the count. */
  readonly window: number;
  readonly waiting: Batched['waiting'];
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
  const exact = (name: string, windowMs: number) =>
    withFallback(
      async () => {
        const [count, ttl] = await client.counterIncrement(key(name), windowMs);
        return { count, resetInMs: ttl };
      },
      async () => fallback.increment(name, windowMs),
    );

  // Increments with an allowance: counted here, sent in batches.
  const syncMs = events.syncMs ?? 50;
  const batched = new LRUCache<string, Batched>({
    max: 100_000,
    // A key pushed out while hits wait for its batch: they are answered with what is known here.
    dispose: (state, _name, reason) => {
      if (reason !== 'evict') return;
      const at = Date.now();
      for (const resolve of state.waiting.splice(0)) resolve(localCount(state, at));
    },
  });
  const dirty = new Set<string>();
  let timer: NodeJS.Timeout | undefined;
  let flushing = false;

  function schedule(): void {
    if (timer !== undefined) return;
    timer = setTimeout(() => {
      timer = undefined;
      void flush();
    }, syncMs);
    timer.unref();
  }

  /** Sends every key's unsent hits in one pipeline; replies set the synced counts. */
  async function flush(): Promise<void> {
    if (flushing || dirty.size === 0) return;
    flushing = true;
    const batch: InFlight[] = [];
    for (const name of dirty) {
      const state = batched.get(name);
      if (state === undefined || state.unsent === 0) continue;
      batch.push({ name, state, by: state.unsent, window: state.window, waiting: state.waiting });
      state.sent += state.unsent;
      state.unsent = 0;
      state.waiting = [];
    }
    dirty.clear();
    if (batch.length === 0) {
      flushing = false;
      return;
    }
    try {
      const replies = await redis.run(async (c) => {
        const pipeline = c.pipeline();
        // A key new to Redis gets the rest of the window that began with its first hit here.
        const at = Date.now();
        for (const { name, state, by } of batch)
          pipeline.counterIncrement(key(name), Math.max(1, state.endsAt - at), by);
        const results = await pipeline.exec();
        if (results === null) throw new Error('pipeline discarded');
        // exec() resolves even when its commands time out; a timeout must count as a failure for
        // the breaker, or a paused Redis makes every waiting hit sit out the command timeout.
        const failed = results.find(([err]) => err !== null && !(err instanceof ReplyError));
        if (failed !== undefined) throw failed[0];
        return results;
      });
      const at = Date.now();
      batch.forEach((entry, i) => {
        const [err, reply] = replies[i] ?? [new Error('no reply'), undefined];
        // Redis refused the command (a ReplyError): not counted, so it goes again.
        if (err !== null || reply === undefined) {
          unacknowledged(entry, at, err instanceof ReplyError);
          return;
        }
        const { state, by, window, waiting } = entry;
        state.sent -= by;
        const [count, ttl] = reply as [number, number];
        if (window === state.window) {
          state.synced = count;
          state.endsAt = at + ttl;
        }
        // The hits of this batch were the last `waiting.length` of it, in order.
        waiting.forEach((resolve, j) => {
          resolve({ count: count - waiting.length + 1 + j, resetInMs: ttl });
        });
      });
    } catch (err) {
      events.onFallback?.(err);
      const at = Date.now();
      // The breaker refused the batch (RedisUnavailableError): never sent, so it goes again.
      for (const entry of batch) unacknowledged(entry, at, err instanceof RedisUnavailableError);
    } finally {
      flushing = false;
    }
    if (dirty.size > 0) {
      // More hits came in meanwhile: send them now if some wait, else with the next tick.
      if ([...dirty].some((name) => (batched.get(name)?.waiting.length ?? 0) > 0) && redis.available())
        void flush();
      else schedule();
    }
  }

  /**
   * A batch entry Redis did not acknowledge: its waiting hits are answered with this process's
   * view. Hits Redis surely did not count (`resend`) go with a later batch; hits it may have
   * counted (a timeout, a lost connection) are never sent again, so Redis never counts one twice.
   */
  function unacknowledged({ name, state, by, waiting }: InFlight, at: number, resend: boolean): void {
    state.sent -= by;
    answerLocally(state, waiting, state.synced + state.sent + state.lost + by, at);
    if (resend) {
      state.unsent += by;
      dirty.add(name);
    } else {
      state.lost += by;
    }
  }

  /**
   * Answers a batch's waiting hits with this process's view, as if each had been counted here: a
   * hit's count includes the hits before it, never those after it (those sent later, or newer).
   */
  function answerLocally(state: Batched, waiting: Batched['waiting'], last: number, at: number): void {
    const resetInMs = Math.max(0, state.endsAt - at);
    waiting.forEach((resolve, j) => {
      resolve({ count: last - (waiting.length - 1 - j), resetInMs });
    });
  }

  function localCount(state: Batched, at: number): WindowCount {
    return {
      count: state.synced + state.sent + state.unsent + state.lost,
      resetInMs: Math.max(0, state.endsAt - at),
    };
  }

  function incrementWithAllowance(
    name: string,
    windowMs: number,
    allowance: number,
  ): WindowCount | Promise<WindowCount> {
    const at = Date.now();
    let state = batched.get(name);
    if (state !== undefined && state.endsAt <= at) {
      // The window ended: hits not yet sent belonged to it and are dropped with it.
      state.synced = 0;
      state.unsent = 0;
      state.lost = 0;
      state.window += 1;
      state.endsAt = at + windowMs;
    }
    if (state === undefined) {
      state = {
        synced: 0,
        sent: 0,
        unsent: 0,
        lost: 0,
        endsAt: at + windowMs,
        windowMs,
        window: 0,
        waiting: [],
      };
      batched.set(name, state);
    }
    state.unsent += 1;
    dirty.add(name);
    if (state.sent + state.unsent > allowance && redis.available()) {
      // More of this process's hits than the allowance would be unknown to Redis: this one waits.
      const counted = new Promise<WindowCount>((resolve) => state.waiting.push(resolve));
      void flush();
      return counted;
    }
    if (state.unsent * 2 >= allowance && !flushing) void flush();
    else schedule();
    return localCount(state, at);
  }

  return {
    kind: 'redis',
    increment: (name, windowMs, allowance = 0) =>
      allowance > 0 ? incrementWithAllowance(name, windowMs, allowance) : exact(name, windowMs),
    peek: (name) =>
      withFallback(
        async () => {
          const [count, ttl] = await client.counterPeek(key(name));
          // Hits counted here that Redis had not yet when it answered: batches sent before this
          // peek were answered before it (one connection, in order), so none is counted twice.
          const state = batched.get(name);
          if (state === undefined || state.sent + state.unsent === 0) return { count, resetInMs: ttl };
          const at = Date.now();
          return {
            count: count + state.sent + state.unsent,
            resetInMs: ttl > 0 ? ttl : Math.max(0, state.endsAt - at),
          };
        },
        () => fallback.peek(name),
      ),
    reset: (name) => {
      batched.delete(name);
      return withFallback(
        async () => {
          await client.del(key(name));
          await fallback.reset(name);
        },
        () => fallback.reset(name),
      );
    },
  };
}
