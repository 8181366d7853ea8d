import { type LsnKey, lsnDistance } from './lsn.js';

/**
 * The verdict of one replica health check (replicas.ts), from what the replica and the primary
 * reported — a pure function, so that each rule can be tested with exact inputs (decision 0119).
 */

export type ReplicaState =
  | 'starting'
  | 'up'
  | 'lagging'
  | 'not_streaming'
  | 'diverged'
  | 'paused'
  | 'not_standby'
  | 'down';

/** What the replica reported, read before the primary's position (see `diverged` below). */
export interface ReplicaObservation {
  readonly recovery: boolean;
  readonly replay: LsnKey | undefined;
  readonly receive: LsnKey | undefined;
  readonly paused: boolean;
  /** Seconds since the commit of the last transaction replayed (null: none since the server started). */
  readonly sinceLastReplay: number | null;
  /** A WAL receiver is connected to a primary and streaming (pg_stat_wal_receiver). */
  readonly streaming: boolean;
}

export interface PrimaryObservation {
  /** The primary's flush position, read after the replica's replay position. */
  readonly flush: LsnKey;
  /** Seconds the replica has left unreplayed a position the primary had flushed (PrimaryHistory). */
  readonly unreplayedSeconds: number;
}

export interface ReplicaVerdict {
  readonly state: ReplicaState;
  readonly lagBytes: number | undefined;
  readonly lagSeconds: number | undefined;
  readonly reason: string;
}

export interface LagLimits {
  readonly maxLagBytes: number;
  readonly maxLagSeconds: number;
}

/**
 * `primary` undefined: the primary did not answer. `was`: the state before this check.
 *
 * - A replay position beyond the primary's flush position cannot be on the primary's timeline: the
 *   replica was read first, and a standby only ever receives what its primary has flushed. It has
 *   history the primary does not (a PITR or failover of the primary): `diverged`, and it stays so
 *   until it is seen down (rebuilt and restarted), since no amount of replay undoes that.
 * - No WAL receiver streaming while the primary answers: `not_streaming` (a broken slot, a
 *   partition, a wrong primary_conninfo). Its receive position stops moving, so "replayed all it
 *   received" says nothing about the primary's writes.
 * - Time lag is the larger of the age of the oldest primary position it has not replayed — which
 *   catches a receiver that still looks connected but gets nothing — and, while it has received
 *   more than it has applied, the age of the last transaction it replayed.
 * - The primary unreachable: nothing can commit, so the replica falls no further behind; one that
 *   was in use keeps serving (decision 0079), one skipped for lag, streaming or divergence stays
 *   skipped: how stale it is cannot be known until the primary is back.
 */
export function assessReplica(
  seen: ReplicaObservation,
  primary: PrimaryObservation | undefined,
  was: ReplicaState,
  limits: LagLimits,
): ReplicaVerdict {
  if (!seen.recovery || seen.replay === undefined)
    return verdict('not_standby', undefined, undefined, 'not in recovery: promoted, or not a standby');
  if (was === 'diverged')
    return verdict('diverged', undefined, undefined, 'replayed past the primary earlier: rebuild it');
  if (primary === undefined) {
    if (seen.paused) return verdict('paused', undefined, undefined, 'replay paused; primary unreachable');
    if (was === 'lagging' || was === 'not_streaming')
      return verdict(was, undefined, undefined, 'still skipped: primary unreachable');
    return verdict('up', undefined, undefined, 'primary unreachable');
  }
  if (seen.replay > primary.flush)
    return verdict(
      'diverged',
      undefined,
      undefined,
      "replay position beyond the primary's: not on the primary's timeline (PITR or failover)",
    );
  const lagBytes = lsnDistance(seen.replay, primary.flush);
  const applied = lagBytes === 0 || (seen.receive !== undefined && seen.replay >= seen.receive);
  const lagSeconds = Math.max(
    primary.unreplayedSeconds,
    applied ? 0 : Math.max(0, seen.sinceLastReplay ?? 0),
  );
  if (seen.paused) return verdict('paused', lagBytes, lagSeconds, 'replay paused');
  if (!seen.streaming)
    return verdict('not_streaming', lagBytes, lagSeconds, 'no WAL receiver streaming from the primary');
  if (lagBytes > limits.maxLagBytes || lagSeconds > limits.maxLagSeconds)
    return verdict('lagging', lagBytes, lagSeconds, 'behind by more than the lag limits');
  return verdict('up', lagBytes, lagSeconds, 'streaming, within the lag limits');
}

function verdict(
  state: ReplicaState,
  lagBytes: number | undefined,
  lagSeconds: number | undefined,
  reason: string,
): ReplicaVerdict {
  return { state, lagBytes, lagSeconds, reason };
}

/**
 * The primary's flush positions as sampled by the health checks, with when each was read: a
 * replica whose replay is below a position sampled t seconds ago misses WAL that is at least t
 * seconds old — a lower bound of its lag that needs nothing from the replica's WAL receiver.
 */
export interface PrimaryHistory {
  /** A flush position read at `at` (ms, after the read returned). */
  record(flush: LsnKey, at: number): void;
  /** Seconds, at `at` (ms), since the earliest sampled position above `replay` was read; 0 if none. */
  unreplayedSeconds(replay: LsnKey, at: number): number;
}

/** `horizonMs`: how far back an exact age matters (beyond it, the oldest older sample is kept). */
export function createPrimaryHistory(horizonMs: number): PrimaryHistory {
  // Increasing in both position and time: a sample repeating the last position adds nothing
  // (the earlier time is the one that counts).
  const samples: { readonly lsn: LsnKey; readonly at: number }[] = [];
  return {
    record(flush, at) {
      // Only a higher position is news. A lower one is a concurrent check that read the primary a
      // moment earlier — or another primary (a restore): then replicas count as lagging until it
      // passes the old positions, or the service restarts, as the restore runbook has it.
      if (flush > (samples.at(-1)?.lsn ?? '')) samples.push({ lsn: flush, at });
      // Keep the newest sample older than the horizon: a replica behind it is at least that late,
      // and dropping it would make a replica behind it look only as late as the next one.
      while (samples.length >= 2 && (samples[1]?.at ?? at) < at - horizonMs) samples.shift();
    },
    unreplayedSeconds(replay, at) {
      const first = samples.find((s) => s.lsn > replay);
      return first === undefined ? 0 : Math.max(0, (at - first.at) / 1000);
    },
  };
}
