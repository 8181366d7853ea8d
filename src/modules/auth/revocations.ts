import type { Logger } from 'pino';
import type { Db } from '../../db/database.js';
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
 * Why the database and not Redis pub/sub: revocation must hold while Redis is down or partitioned,
 * and a missed pub/sub message is silent. See docs/decisions/0005-access-token-revocation.md.
 */
export interface RevocationList {
  start(): Promise<void>;
  /** Stops polling; resolves once a poll in progress has finished. */
  stop(): Promise<void>;
  /** Records revocations made by this instance, effective immediately here. */
  markRevoked(sessionIds: readonly string[]): void;
  status(sessionId: string): 'revoked' | 'live' | 'unknown';
}

export interface RevocationListOptions {
  /** How long revocations are remembered: an access token cannot live longer than this. */
  readonly retentionMs: number;
  readonly pollIntervalMs?: number;
  readonly staleAfterMs?: number;
  /**
   * Each poll looks this far behind the newest revocation it has seen, so a revocation committed
   * late, or stamped by a server whose clock lags, is not skipped.
   */
  readonly overlapMs?: number;
  readonly now?: () => number;
}

export function createRevocationList(db: Db, logger: Logger, options: RevocationListOptions): RevocationList {
  const pollIntervalMs = options.pollIntervalMs ?? 250;
  const staleAfterMs = options.staleAfterMs ?? 750;
  const overlapMs = options.overlapMs ?? 10_000;
  const now = options.now ?? Date.now;
  const revoked = new Map<string, number>();
  let newestSeen = 0;
  let lastSuccess = Number.NEGATIVE_INFINITY;
  let timer: NodeJS.Timeout | undefined;
  let failing = false;
  let stopped = false;
  let polling: Promise<void> | undefined;

  const poll = async () => {
    const startedAt = now();
    const since = Math.max(newestSeen - overlapMs, startedAt - options.retentionMs);
    try {
      const rows = await revokedSince(db, new Date(since).toISOString());
      for (const row of rows) {
        const at = Date.parse(row.revoked_at);
        revoked.set(row.id, at);
        if (at > newestSeen) newestSeen = at;
      }
      // Forget what no live access token can depend on any more.
      for (const [id, at] of revoked) if (at < startedAt - options.retentionMs) revoked.delete(id);
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
    markRevoked(sessionIds) {
      const at = now();
      for (const id of sessionIds) revoked.set(id, at);
    },
    status(sessionId) {
      if (revoked.has(sessionId)) return 'revoked';
      return now() - lastSuccess <= staleAfterMs ? 'live' : 'unknown';
    },
  };
}
