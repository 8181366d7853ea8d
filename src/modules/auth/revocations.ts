import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import { readDatabaseNow } from '../../db/clock.js';
import type { Db, Engine } from '../../db/database.js';
import { revokedSince } from './sessions.repository.js';

/**
 * Which sessions have been revoked, known to every instance within a second, for the price of a
 * Map lookup per request.
 *
 * The database is the source of truth (sessions.revoked_at). Each instance polls it every
 * `pollIntervalMs` for revocations since its last look (an indexed query touching only revoked
 * rows), and an instance that revokes a session records it locally at once. If polling fails for
 * longer than `staleAfterMs`, `status()` answers 'unknown' and callers ask the database directly:
 * the check fails closed, never open.
 *
 * Every stamp and every bound of the poll is the database's clock, never this server's: revoked_at
 * is written by the database (db/clock.ts), and each poll starts by asking the database what time
 * it is. The next poll looks back from that moment by `overlapMs`, which only has to cover the time
 * between a revocation's stamp and its commit. So the high-water mark can never run ahead of what
 * the database holds, and an app server whose clock is minutes off (security probe 2026-12-02,
 * finding 1) neither hides other servers' revocations nor has its own skipped. A failed poll does
 * not move the mark: the next successful one covers the gap.
 *
 * Why the database and not Redis pub/sub: revocation must hold while Redis is down or partitioned,
 * and a missed pub/sub message is silent. See docs/decisions/0005-access-token-revocation.md.
 */
export interface RevocationList {
  start(): Promise<void>;
  /** Stops polling; resolves once a poll in progress has finished. */
  stop(): Promise<void>;
  /** Records revocations made by this instance (with the database's stamps), effective at once here. */
  markRevoked(revocations: ReadonlyArray<{ id: string; revoked_at: string }>): void;
  status(sessionId: string): 'revoked' | 'live' | 'unknown';
  /**
   * Whether this instance has seen the session, as a session of this user, in the database (or
   * created it). 'live' only says
   * "not known to be revoked": a session id the database never had must be looked up, once, so that
   * a validly signed token naming a missing session fails closed (security probe 2026-12-02,
   * finding 13). Bounded: the least recently used ids are forgotten first and looked up again.
   */
  isKnown(sessionId: string, userId: string): boolean;
  markKnown(sessionId: string, userId: string): void;
}

export interface RevocationListOptions {
  readonly engine: Engine;
  /** How long revocations are remembered: an access token cannot live longer than this. */
  readonly retentionMs: number;
  readonly pollIntervalMs?: number;
  readonly staleAfterMs?: number;
  /** How far each poll looks behind the previous poll's database time (stamp-to-commit delay). */
  readonly overlapMs?: number;
  /** A monotonic clock for "how long since the last successful poll" (tests replace it). */
  readonly monotonicNow?: () => number;
  /** How many existing sessions to remember (about 200 bytes each). */
  readonly knownSessions?: number;
}

export function createRevocationList(db: Db, logger: Logger, options: RevocationListOptions): RevocationList {
  const pollIntervalMs = options.pollIntervalMs ?? 250;
  const staleAfterMs = options.staleAfterMs ?? 750;
  const overlapMs = options.overlapMs ?? 10_000;
  const monotonicNow = options.monotonicNow ?? (() => performance.now());
  /** Session id → revoked_at (database clock, ms since the epoch). */
  const revoked = new Map<string, number>();
  /** Session id → its user's id, for sessions seen in the database. */
  const known = new LRUCache<string, string>({ max: options.knownSessions ?? 100_000 });
  /** Where the next poll starts, in database time; undefined until the first poll succeeds. */
  let nextSince: number | undefined;
  let lastSuccess = Number.NEGATIVE_INFINITY;
  let timer: NodeJS.Timeout | undefined;
  let failing = false;
  let stopped = false;
  let polling: Promise<void> | undefined;

  const poll = async () => {
    const startedAt = monotonicNow();
    try {
      const dbNow = Date.parse(await readDatabaseNow(db, options.engine));
      const oldestRelevant = dbNow - options.retentionMs;
      const since = Math.max(nextSince ?? oldestRelevant, oldestRelevant);
      const rows = await revokedSince(db, new Date(since).toISOString());
      for (const row of rows) revoked.set(row.id, Date.parse(row.revoked_at));
      // Forget what no live access token can depend on any more.
      for (const [id, at] of revoked) if (at < oldestRelevant) revoked.delete(id);
      nextSince = dbNow - overlapMs;
      lastSuccess = startedAt;
      if (failing) logger.info('revocation polling restored');
      failing = false;
    } catch (err) {
      if (!failing) logger.warn({ err }, 'revocation polling failed; checking sessions in the database');
      failing = true;
    }
  };

  const schedule = () => {
    if (stopped) return;
    timer = setTimeout(() => {
      polling = poll().finally(schedule);
    }, pollIntervalMs);
    timer.unref();
  };

  return {
    async start() {
      await poll();
      schedule();
    },
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await polling;
    },
    markRevoked(revocations) {
      for (const { id, revoked_at } of revocations) revoked.set(id, Date.parse(revoked_at));
    },
    status(sessionId) {
      if (revoked.has(sessionId)) return 'revoked';
      return monotonicNow() - lastSuccess <= staleAfterMs ? 'live' : 'unknown';
    },
    isKnown(sessionId, userId) {
      return known.get(sessionId) === userId;
    },
    markKnown(sessionId, userId) {
      known.set(sessionId, userId);
    },
  };
}
