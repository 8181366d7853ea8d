import type { Redis } from 'ioredis';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';

/**
 * The in-process tier in front of the Redis cache (decision 0104): hits are answered from this
 * process's memory, with no Redis round trip, and kept coherent by Redis server-assisted client-side
 * caching. One dedicated connection per tier (RESP2) runs
 *
 *   CLIENT TRACKING ON REDIRECT <its own id> BCAST PREFIX <key prefix>cache:
 *   SUBSCRIBE __redis__:invalidate
 *
 * so Redis tells it about every change to a key of the cache — a generation replaced, an entry
 * stored, deleted, expired or evicted, a FLUSHALL — whoever made it. Redis sends these in the same
 * turn of its event loop as the reply to the command that caused them, before that reply.
 *
 * Rules that keep the tier from serving what Redis would not:
 * - Only Redis hits are copied here, with the entry's remaining TTL; a miss always asks Redis.
 * - A copy is made only if nothing that could change it was invalidated while the Redis lookup was
 *   in flight: the lookup records the epochs of its scope and key (and the session) before it is
 *   sent, every invalidation message bumps them, and a fill whose epochs moved is dropped. So an
 *   invalidation that overtakes the reply (it arrives on another connection) cannot be lost.
 * - The tier serves only while the tracking connection is known to be live: established (tracking
 *   on, subscribed) and answering a heartbeat PING within the lease. A reply to a PING comes after
 *   every invalidation Redis sent before it on that connection, so a PING answered proves the tier
 *   is up to date as of when it was sent. A closed connection or a missed heartbeat flushes the
 *   tier and bypasses it (every read goes to Redis) until tracking is established again.
 * - This process's own writes invalidate its copies before they go to Redis, and `settle()` waits
 *   for a PING on the tracking connection after the write: when it resolves, Redis has sent the
 *   invalidation to every tracking connection, this one included. It waits for every other tier
 *   of this process too (several app instances in one process, as in the tests): Redis has sent
 *   their invalidations as well, but their sockets may not have been read yet when the writer's
 *   PING answer is, and the next request in this process would run before them.
 */

/** The heartbeats of every open tier in this process, for `settle()`. */
const processTiers = new Set<() => Promise<void>>();

export interface LocalTierOptions {
  /** The Redis client whose server and key prefix the tier tracks (a duplicate connection is made). */
  readonly client: Redis;
  readonly logger: Logger;
  /** Entries kept (least recently used go first). */
  readonly maxEntries: number;
  /** How long an answered heartbeat lets the tier serve; heartbeats go every quarter of it. */
  readonly leaseMs?: number;
  /** Called on every change of whether the tier serves (metrics). */
  readonly onServingChange?: (serving: boolean) => void;
}

/** What a Redis lookup records before it is sent; a fill with moved epochs is dropped. */
export interface FillTicket {
  /** When the lookup was sent: a copy expires no later than the Redis entry did. */
  readonly at: number;
  readonly session: number;
  readonly global: number;
  readonly scope: number;
  readonly key: number;
}

interface Local {
  readonly scope: string;
  readonly scopeEpoch: number;
  readonly value: unknown;
  readonly expiresAt: number;
}

export interface LocalTier {
  /** The copy for the key, or `undefined` (values are JSON, never undefined): then ask Redis. */
  get(scope: string, key: string): Local | undefined;
  /** Before a Redis lookup: the epochs it must still see to fill. Undefined while the tier is off. */
  ticket(scope: string, key: string): FillTicket | undefined;
  /** After a Redis hit: keeps a copy for `ttlMs`, unless something was invalidated meanwhile. */
  fill(ticket: FillTicket, scope: string, key: string, value: unknown, ttlMs: number): void;
  /** This process's own write: its copies go at once (the Redis invalidation follows). */
  invalidate(scopes: readonly string[], keys: readonly string[]): void;
  invalidateAll(): void;
  /** Resolves once invalidations Redis sent before now have been received by every tier of this process (or the tiers are off). */
  settle(): Promise<void>;
  serving(): boolean;
  /** Entries held now. */
  size(): number;
  /** The tracking connection's Redis client ID while established (for CLIENT LIST / KILL). */
  trackingId(): number | undefined;
  close(): Promise<void>;
}

export const invalidationChannel = '__redis__:invalidate';

export function createLocalTier(options: LocalTierOptions): LocalTier {
  const { logger, maxEntries } = options;
  const leaseMs = options.leaseMs ?? 1000;
  const keyPrefix = options.client.options.keyPrefix ?? '';
  const trackedPrefix = `${keyPrefix}cache:`;
  const globalKey = `${trackedPrefix}gen`;
  const scopePrefix = `${trackedPrefix}gen:`;
  const entryPrefix = `${trackedPrefix}entry:`;

  const entries = new LRUCache<string, Local>({ max: maxEntries });
  // Epochs: bumped by every invalidation of the scope or key. Bounded; an evicted epoch comes back
  // as a new number (the counter never repeats), which only ever invalidates.
  let counter = 0;
  const scopeEpochs = new LRUCache<string, number>({ max: maxEntries });
  const keyEpochs = new LRUCache<string, number>({ max: maxEntries });
  const epochOf = (epochs: LRUCache<string, number>, name: string): number => {
    let epoch = epochs.get(name);
    if (epoch === undefined) {
      epoch = ++counter;
      epochs.set(name, epoch);
    }
    return epoch;
  };
  let globalEpoch = 0;
  // A session is one established tracking connection; a new one starts from an empty tier.
  let session = 0;
  // Tracking on and subscribed on the current connection (until it closes).
  let tracked = false;
  // Serving: tracked, and no heartbeat missed since the last flush.
  let established = false;
  let leaseUntil = 0;
  let wasServing = false;
  let closed = false;
  let clientId: number | undefined;

  const connection = options.client.duplicate({
    protocol: 2,
    keyPrefix: '',
    autoResubscribe: false,
    enableOfflineQueue: false,
    lazyConnect: true,
    connectionName: 'shipshape-cache-tracking',
  });
  // Connection errors are the main handle's to log (it sees the same server); here they only flush.
  connection.on('error', () => {});

  function report(): void {
    const now = established && Date.now() < leaseUntil;
    if (now === wasServing) return;
    wasServing = now;
    options.onServingChange?.(now);
  }

  function flush(): void {
    entries.clear();
    globalEpoch += 1;
  }

  function lost(reason: string): void {
    const was = established;
    established = false;
    session += 1;
    flush();
    report();
    if (was && !closed) logger.warn({ reason }, 'cache tracking lost; local tier flushed and bypassed');
  }

  function renew(sentAt: number): void {
    if (established) leaseUntil = Math.max(leaseUntil, sentAt + leaseMs);
  }

  async function heartbeat(): Promise<void> {
    if (!tracked || connection.status !== 'ready') return;
    const mine = session;
    const sentAt = Date.now();
    try {
      await connection.ping();
      if (mine !== session || !tracked || closed) return;
      if (!established) {
        // The same connection, still tracking: nothing it was sent is lost, only late. Everything
        // sent before this PING has now been applied (and the tier was flushed when it was missed).
        established = true;
        logger.info('cache tracking answering again; local tier serving');
      }
      renew(sentAt);
    } catch {
      if (mine === session) lost('heartbeat unanswered');
    } finally {
      report();
    }
  }

  async function establish(): Promise<void> {
    const mine = session;
    try {
      const id = Number(await connection.client('ID'));
      await connection.call(
        'CLIENT',
        'TRACKING',
        'ON',
        'REDIRECT',
        String(id),
        'BCAST',
        'PREFIX',
        trackedPrefix,
      );
      await connection.subscribe(invalidationChannel);
      const sentAt = Date.now();
      await connection.ping();
      if (mine !== session || closed) return;
      flush();
      clientId = id;
      tracked = true;
      established = true;
      leaseUntil = sentAt + leaseMs;
      logger.info({ prefix: trackedPrefix }, 'cache tracking established; local tier serving');
      report();
    } catch (err) {
      if (mine === session && !closed) {
        logger.warn({ err }, 'cache tracking could not be established; local tier bypassed');
        // Drop the connection: the reconnect tries again.
        connection.disconnect(true);
      }
    }
  }

  connection.on('ready', () => void establish());
  connection.on('close', () => {
    tracked = false;
    clientId = undefined;
    lost('tracking connection closed');
  });
  connection.on('messageBuffer', (channel: Buffer, message: unknown) => {
    if (channel.toString() !== invalidationChannel) return;
    // A null list: the whole database was flushed.
    if (!Array.isArray(message)) return flush();
    for (const raw of message) {
      const name = String(raw);
      if (name === globalKey) {
        flush();
      } else if (name.startsWith(scopePrefix)) {
        scopeEpochs.set(name.slice(scopePrefix.length), ++counter);
      } else if (name.startsWith(entryPrefix)) {
        const key = name.slice(entryPrefix.length);
        keyEpochs.set(key, ++counter);
        entries.delete(key);
      }
      // cache:floor and anything else under the prefix: nothing cached depends on it alone.
    }
  });

  const settleThis = async () => {
    if (established) await heartbeat();
  };
  processTiers.add(settleThis);
  const timer = setInterval(() => void heartbeat(), Math.max(10, Math.floor(leaseMs / 4)));
  timer.unref();
  // Also checked on every read, so a blocked event loop (late timers) cannot stretch the lease.
  const serving = () => established && Date.now() < leaseUntil;
  connection.connect().catch(() => {
    // Retried by the connection's retry strategy; the tier stays bypassed meanwhile.
  });

  return {
    get(scope, key) {
      if (!established) return undefined;
      const local = entries.get(key);
      if (local === undefined || local.scope !== scope) return undefined;
      const now = Date.now();
      if (now >= leaseUntil || now >= local.expiresAt || scopeEpochs.get(scope) !== local.scopeEpoch) {
        if (now >= leaseUntil) report();
        return undefined;
      }
      return local;
    },
    ticket(scope, key) {
      if (!serving()) return undefined;
      return {
        at: Date.now(),
        session,
        global: globalEpoch,
        scope: epochOf(scopeEpochs, scope),
        key: epochOf(keyEpochs, key),
      };
    },
    fill(ticket, scope, key, value, ttlMs) {
      if (
        ticket.session !== session ||
        ticket.global !== globalEpoch ||
        !serving() ||
        scopeEpochs.get(scope) !== ticket.scope ||
        keyEpochs.get(key) !== ticket.key ||
        ttlMs <= 0
      )
        return;
      entries.set(key, { scope, scopeEpoch: ticket.scope, value, expiresAt: ticket.at + ttlMs });
    },
    invalidate(scopes, keys) {
      for (const scope of scopes) scopeEpochs.set(scope, ++counter);
      for (const key of keys) {
        keyEpochs.set(key, ++counter);
        entries.delete(key);
      }
    },
    invalidateAll: flush,
    async settle() {
      await Promise.all([...processTiers].map((beat) => beat()));
    },
    serving,
    size: () => entries.size,
    trackingId: () => (established ? clientId : undefined),
    async close() {
      processTiers.delete(settleThis);
      closed = true;
      tracked = false;
      clearInterval(timer);
      lost('closed');
      try {
        await connection.quit();
      } catch {
        connection.disconnect();
      }
    },
  };
}
