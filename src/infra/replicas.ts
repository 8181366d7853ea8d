import { sql } from 'kysely';
import type pg from 'pg';
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { Config } from '../config.js';
import type { Db, Queryable } from '../db/database.js';
import { classifyDbError } from '../lib/db-errors.js';
import { createPostgresPool, withTimeout } from './database.js';
import { isLsnKey, type LsnKey, lsnKeyOf, primaryOnlyLsn } from './lsn.js';
import { assessReplica, createPrimaryHistory, type ReplicaState } from './replica-health.js';

/**
 * Read routing over streaming replicas (decision 0030). Writes, transactions and `FOR UPDATE` never
 * come here: they use the primary's handle, which stays the default everywhere. A read comes here
 * with the freshness it needs:
 *
 * - none (`undefined`): any healthy replica — the catalog for anonymous visitors;
 * - a WAL position (an `LsnKey`): a replica only once it has replayed that position, checked on the
 *   very connection the read then uses (replay only moves forward on a running server), polling for
 *   at most `waitMs`; otherwise the primary;
 * - `'primary'`, or the position no server reaches (`primaryOnlyLsn`: a write whose position could
 *   not be read): the primary.
 *
 * A caller that prefers an older answer to none (the catalog) passes `onStale`: when the primary
 * cannot be reached, a read it would have had to serve — the freshness asked for is one no replica
 * has replayed, or `'primary'` — runs on a replica in use instead, and `onStale()` is called before
 * the answer is returned, so that the caller does not cache it (decision 0096). Nothing can commit
 * while the primary is away, so that answer is the newest any reachable server has.
 *
 * "Healthy" comes from a background check of each replica, at a jittered interval: a replica that
 * is unreachable, not in recovery (promoted, or the primary by mistake), paused, not streaming from
 * the primary, replayed past the primary (another timeline), or behind by more than the byte or
 * time limit is skipped (replica-health.ts, decision 0119). With every replica out, the primary
 * serves every read; `/ready`, the log and the `db_replica_*` metrics say so.
 */

export type Freshness = LsnKey | 'primary' | undefined;

export type { ReplicaState } from './replica-health.js';

export interface ReplicaStatus {
  readonly name: string;
  readonly state: ReplicaState;
  readonly replayLsn: LsnKey | undefined;
  readonly lagBytes: number | undefined;
  readonly lagSeconds: number | undefined;
}

export interface ReplicaRouter {
  /** False when no replica is configured: every read is the primary's. */
  readonly configured: boolean;
  /**
   * Runs a read-only unit of work on a database at least as fresh as asked — or, with `onStale`,
   * on an older replica while the primary is unreachable (`onStale()` is then called first).
   */
  read<T>(freshness: Freshness, work: (db: Queryable) => Promise<T>, onStale?: () => void): Promise<T>;
  /** The primary's WAL insert position, read now: call it after COMMIT (never inside the transaction). */
  primaryLsn(): Promise<LsnKey>;
  status(): readonly ReplicaStatus[];
  /** True when at least one replica is usable, or none is configured. */
  serving(): boolean;
  start(): void;
  stop(): Promise<void>;
}

type Reason =
  | 'any'
  | 'caught_up'
  | 'required'
  | 'behind'
  | 'no_replica'
  | 'replica_failed'
  | 'primary_unreachable'
  | 'none_configured';

export interface ReplicaRouterOptions {
  readonly urls: readonly string[];
  readonly maxLagBytes: number;
  readonly maxLagSeconds: number;
  readonly checkIntervalMs: number;
  readonly waitMs: number;
}

interface Replica {
  readonly name: string;
  readonly db: Db;
  state: ReplicaState;
  replayLsn: LsnKey | undefined;
  lagBytes: number | undefined;
  lagSeconds: number | undefined;
  timer: NodeJS.Timeout | undefined;
}

/** host:port of a connection string: a metric label and a log field that never carries a password. */
export function replicaName(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.hostname}:${parsed.port || '5432'}`;
  } catch {
    return 'replica';
  }
}

function shuffled<T>(items: readonly T[]): T[] {
  const copy = [...items];
  for (let i = copy.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [copy[i], copy[j]] = [copy[j] as T, copy[i] as T];
  }
  return copy;
}

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// 'unavailable' errors that are about one query (a timeout, a conflict), not the server being out of reach.
const queryLevel = new Set(['57014', '40001', '40P01', '55P03']);

/** The primary could not be reached at all: refused, reset, terminated, shut down, or no answer. */
function unreachable(err: unknown): boolean {
  const code = typeof err === 'object' && err !== null ? (err as { code?: unknown }).code : undefined;
  return classifyDbError(err) === 'unavailable' && !queryLevel.has(String(code));
}

/** A replica read that failed because of the replica (gone, or a query cancelled by recovery): retry on the primary. */
function replicaTrouble(err: unknown): boolean {
  return classifyDbError(err) === 'unavailable';
}

export function createReplicaRouter(
  primary: Db,
  database: Config['database'],
  options: ReplicaRouterOptions,
  deps: {
    readonly logger: Logger;
    readonly registry: Registry;
    /** Called with each replica's pool as it is made (tracing: its reads get database spans too). */
    readonly instrumentPool?: (pool: pg.Pool, replica: string) => void;
  },
): ReplicaRouter {
  const { logger } = deps;
  const replicaConfig = { ...database, connectTimeoutMs: Math.min(database.connectTimeoutMs, 2000) };
  const replicas: Replica[] = options.urls.map((url) => {
    const name = replicaName(url);
    const { pool, db } = createPostgresPool(
      replicaConfig,
      url,
      logger.child({ replica: name }),
      'shipshape-replica-read',
    );
    const replica: Replica = {
      name,
      db,
      state: 'starting',
      replayLsn: undefined,
      lagBytes: undefined,
      lagSeconds: undefined,
      timer: undefined,
    };
    deps.instrumentPool?.(pool, name);
    // An idle connection that breaks means the server went away: stop using it now, not at the next check.
    pool.on('error', () => markDown(replica, 'connection lost'));
    return replica;
  });

  const reads = new Counter({
    name: 'db_replica_reads_total',
    help: 'Routed reads by where they ran (replica or primary) and why.',
    labelNames: ['target', 'reason'],
    registers: [deps.registry],
  });
  new Gauge({
    name: 'db_replica_up',
    help: 'Whether the replica is used for reads (1) or skipped (0).',
    labelNames: ['replica'],
    registers: [deps.registry],
    collect() {
      for (const r of replicas) this.set({ replica: r.name }, r.state === 'up' ? 1 : 0);
    },
  });
  new Gauge({
    name: 'db_replica_lag_bytes',
    help: 'WAL bytes the replica has not replayed yet, at the last check.',
    labelNames: ['replica'],
    registers: [deps.registry],
    collect() {
      for (const r of replicas) if (r.lagBytes !== undefined) this.set({ replica: r.name }, r.lagBytes);
    },
  });
  new Gauge({
    name: 'db_replica_lag_seconds',
    help: 'Seconds the replica is at least behind the primary, at the last check: the age of the oldest primary position it has not replayed (0 when caught up).',
    labelNames: ['replica'],
    registers: [deps.registry],
    collect() {
      for (const r of replicas) if (r.lagSeconds !== undefined) this.set({ replica: r.name }, r.lagSeconds);
    },
  });
  const states: readonly ReplicaState[] = [
    'starting',
    'up',
    'lagging',
    'not_streaming',
    'diverged',
    'paused',
    'not_standby',
    'down',
  ];
  new Gauge({
    name: 'db_replica_state',
    help: 'The state of each replica (1 for the current one): why a replica is skipped for reads.',
    labelNames: ['replica', 'state'],
    registers: [deps.registry],
    collect() {
      for (const r of replicas)
        for (const state of states) this.set({ replica: r.name, state }, r.state === state ? 1 : 0);
    },
  });
  new Gauge({
    name: 'db_replica_serving',
    help: 'Replicas currently used for reads (0 with replicas configured: the primary serves every read).',
    registers: [deps.registry],
    collect() {
      this.set(replicas.filter((r) => r.state === 'up').length);
    },
  });

  let stopped = false;
  let allOutLogged = false;
  // The primary's flush positions seen by the checks: a replica's time lag without trusting its
  // WAL receiver. Exact ages matter up to the time-lag limit; a minute more for the metric.
  const history = createPrimaryHistory(options.maxLagSeconds * 1000 + 60_000);
  // When the primary last failed as unreachable (a routed read or the health check); undefined: it answers.
  let primaryFailedAt: number | undefined;
  // While it is this recent, reads that may be stale skip the primary: one try per second finds it back.
  const primaryRetryMs = 1000;

  function primaryUnreachable(): void {
    if (primaryFailedAt === undefined)
      logger.warn(
        'primary unreachable: catalog reads no replica is fresh enough for are served by a replica, uncached',
      );
    primaryFailedAt = Date.now();
  }

  function primaryAnswered(): void {
    if (primaryFailedAt !== undefined) logger.info('primary reachable again: reads as fresh as asked');
    primaryFailedAt = undefined;
  }

  function noteServing(): void {
    if (replicas.length === 0) return;
    const usable = replicas.some((r) => r.state === 'up');
    if (!usable && !allOutLogged) {
      allOutLogged = true;
      logger.warn(
        { replicas: replicas.map((r) => ({ name: r.name, state: r.state })) },
        'no replica usable: the primary serves every read',
      );
    } else if (usable && allOutLogged) {
      allOutLogged = false;
      logger.info('a replica is usable again: reads go back to replicas');
    }
  }

  function setState(replica: Replica, state: ReplicaState, detail: Record<string, unknown> = {}): void {
    if (replica.state === state) return;
    const was = replica.state;
    replica.state = state;
    if (state === 'up') logger.info({ replica: replica.name, was, ...detail }, 'replica in use for reads');
    else if (was !== 'starting' || state !== 'down')
      logger.warn({ replica: replica.name, state, ...detail }, 'replica skipped for reads');
    else logger.warn({ replica: replica.name, state, ...detail }, 'replica not reachable at start-up');
    noteServing();
  }

  function markDown(replica: Replica, why: string): void {
    // A restarted standby may briefly be behind what it had replayed: forget the position.
    replica.replayLsn = undefined;
    setState(replica, 'down', { reason: why });
  }

  async function currentPrimaryLsn(): Promise<LsnKey> {
    const { rows } = await sql<{ lsn: string }>`select pg_current_wal_insert_lsn()::text as lsn`.execute(
      primary,
    );
    const lsn = lsnKeyOf(rows[0]?.lsn);
    if (lsn === undefined) throw new Error('the primary reported no WAL position');
    return lsn;
  }

  /** What the primary has flushed: all a standby can have received (the insert position may be a page ahead). */
  async function primaryFlushLsn(): Promise<LsnKey> {
    const { rows } = await sql<{ lsn: string }>`select pg_current_wal_flush_lsn()::text as lsn`.execute(
      primary,
    );
    const lsn = lsnKeyOf(rows[0]?.lsn);
    if (lsn === undefined) throw new Error('the primary reported no WAL position');
    return lsn;
  }

  async function check(replica: Replica): Promise<void> {
    const timeoutMs = Math.max(1000, Math.min(options.checkIntervalMs, 5000));
    try {
      // The replica first, the primary after: on the primary's timeline the replica can then never
      // be ahead of the primary's position (a standby receives only what its primary has flushed).
      const checkedAt = Date.now();
      const result = await withTimeout(
        sql<{
          recovery: boolean;
          replay: string | null;
          receive: string | null;
          paused: boolean;
          since: number | null;
          streaming: boolean;
        }>`
          select pg_is_in_recovery() as recovery,
                 pg_last_wal_replay_lsn()::text as replay,
                 pg_last_wal_receive_lsn()::text as receive,
                 case when pg_is_in_recovery() then pg_is_wal_replay_paused() else false end as paused,
                 extract(epoch from now() - pg_last_xact_replay_timestamp())::float8 as since,
                 -- A row exists only while a receiver is connected; its status is NULL to roles
                 -- without pg_read_all_stats (then the row is all there is to go by).
                 exists (select 1 from pg_stat_wal_receiver
                         where status is null or status = 'streaming') as streaming`.execute(replica.db),
        timeoutMs,
        'replica check',
      );
      // The primary unreachable is no reason to skip the replica: it is then the only server
      // that can answer reads at all (chaos scenario "primary killed", issue 14).
      const primaryLsn = await withTimeout(primaryFlushLsn(), timeoutMs / 2, 'primary position').catch(
        (err: unknown) => {
          // Refused or gone, not merely slow: stale-tolerant reads stop waiting for it.
          if (unreachable(err)) primaryUnreachable();
          return undefined;
        },
      );
      const row = result.rows[0];
      const replay = lsnKeyOf(row?.replay);
      if (primaryLsn !== undefined) primaryAnswered();
      const verdict = assessReplica(
        {
          recovery: row?.recovery === true,
          replay,
          receive: lsnKeyOf(row?.receive),
          paused: row?.paused === true,
          sinceLastReplay: row?.since ?? null,
          streaming: row?.streaming === true,
        },
        primaryLsn === undefined || replay === undefined
          ? undefined
          : { flush: primaryLsn, unreplayedSeconds: history.unreplayedSeconds(replay, checkedAt) },
        replica.state,
        options,
      );
      if (primaryLsn !== undefined) history.record(primaryLsn, Date.now());
      replica.replayLsn =
        verdict.state === 'not_standby' || verdict.state === 'diverged' ? undefined : replay;
      replica.lagBytes = verdict.lagBytes;
      replica.lagSeconds = verdict.lagSeconds;
      setState(replica, verdict.state, {
        reason: verdict.reason,
        ...(primaryLsn === undefined ? { primary: 'unreachable' } : {}),
        ...(verdict.lagBytes === undefined ? {} : { lagBytes: verdict.lagBytes }),
        ...(verdict.lagSeconds === undefined ? {} : { lagSeconds: verdict.lagSeconds }),
        ...(verdict.state === 'diverged' ? { replayLsn: replay, primaryLsn } : {}),
      });
    } catch (err) {
      if (replica.state !== 'down') logger.warn({ replica: replica.name, err }, 'replica check failed');
      markDown(replica, 'check failed');
    }
  }

  function schedule(replica: Replica, ms: number): void {
    if (stopped) return;
    replica.timer = setTimeout(async () => {
      await check(replica);
      // Jitter: each check lands somewhere in [interval, 1.5 × interval], so checks never bunch up.
      schedule(replica, options.checkIntervalMs * (1 + Math.random() * 0.5));
    }, ms);
    replica.timer.unref();
  }

  function count(target: 'replica' | 'primary', reason: Reason): void {
    reads.inc({ target, reason });
  }

  async function onPrimary<T>(reason: Reason, work: (db: Queryable) => Promise<T>): Promise<T> {
    count('primary', reason);
    return work(primary);
  }

  /**
   * A read only the primary can serve as fresh as asked. With `onStale` and a replica in use, a
   * primary that cannot be reached (now, or within the last second) hands the read to the replica.
   */
  async function onPrimaryOrStale<T>(
    reason: Reason,
    work: (db: Queryable) => Promise<T>,
    replica: Replica | undefined,
    onStale: (() => void) | undefined,
  ): Promise<T> {
    if (onStale === undefined || replica === undefined) return onPrimary(reason, work);
    if (primaryFailedAt === undefined || Date.now() - primaryFailedAt >= primaryRetryMs) {
      try {
        const value = await onPrimary(reason, work);
        primaryAnswered();
        return value;
      } catch (err) {
        if (!unreachable(err)) throw err;
        primaryUnreachable();
      }
    }
    const value = await work(replica.db);
    count('replica', 'primary_unreachable');
    onStale();
    return value;
  }

  /** Polls the connection's replay position until it reaches `lsn` or the wait is over. */
  async function caughtUp(conn: Db, lsn: LsnKey): Promise<boolean> {
    const deadline = Date.now() + options.waitMs;
    for (let attempt = 0; ; attempt++) {
      const { rows } = await sql<{
        replay: string | null;
      }>`select pg_last_wal_replay_lsn()::text as replay`.execute(conn);
      const replay = lsnKeyOf(rows[0]?.replay);
      if (replay !== undefined && replay >= lsn) return true;
      if (Date.now() >= deadline) return false;
      await delay(Math.min(1 + attempt, 5));
    }
  }

  return {
    configured: replicas.length > 0,

    async read(freshness, work, onStale) {
      if (replicas.length === 0) return onPrimary('none_configured', work);
      const usable = shuffled(replicas.filter((r) => r.state === 'up'));
      if (
        freshness === 'primary' ||
        freshness === primaryOnlyLsn ||
        (freshness !== undefined && !isLsnKey(freshness))
      )
        return onPrimaryOrStale('required', work, usable[0], onStale);
      if (usable.length === 0) return onPrimary('no_replica', work);
      if (freshness === undefined) {
        const replica = usable[0] as Replica;
        try {
          const value = await work(replica.db);
          count('replica', 'any');
          return value;
        } catch (err) {
          if (!replicaTrouble(err)) throw err;
          markDown(replica, 'read failed');
          return onPrimary('replica_failed', work);
        }
      }
      // Prefer a replica already known to have replayed the position; verify on the connection anyway.
      const replica =
        usable.find((r) => r.replayLsn !== undefined && r.replayLsn >= freshness) ?? (usable[0] as Replica);
      let outcome: { ok: true; value: Awaited<ReturnType<typeof work>> } | { ok: false };
      try {
        outcome = await replica.db.connection().execute(async (conn) => {
          if (!(await caughtUp(conn, freshness))) return { ok: false as const };
          return { ok: true as const, value: await work(conn) };
        });
      } catch (err) {
        if (!replicaTrouble(err)) throw err;
        markDown(replica, 'read failed');
        return onPrimary('replica_failed', work);
      }
      if (!outcome.ok) return onPrimaryOrStale('behind', work, replica, onStale);
      count('replica', 'caught_up');
      return outcome.value;
    },

    primaryLsn: currentPrimaryLsn,

    status: () =>
      replicas.map((r) => ({
        name: r.name,
        state: r.state,
        replayLsn: r.replayLsn,
        lagBytes: r.lagBytes,
        lagSeconds: r.lagSeconds,
      })),

    serving: () => replicas.length === 0 || replicas.some((r) => r.state === 'up'),

    start() {
      for (const replica of replicas) schedule(replica, 0);
    },

    async stop() {
      stopped = true;
      for (const replica of replicas) clearTimeout(replica.timer);
      await Promise.all(replicas.map((r) => r.db.destroy()));
    },
  };
}
