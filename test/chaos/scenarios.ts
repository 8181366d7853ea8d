import { readFileSync, renameSync, rmSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { Toxic } from '../harness/fault-proxy.js';
import { waitUntil } from '../harness/wait.js';
import type { Attempt } from './load.js';
import type { Topology } from './topology.js';

/**
 * The chaos scenarios: each injects one fault into the running topology, holds it, and heals it.
 * `faultMs.short` is CI's (a few seconds), `faultMs.long` is `npm run chaos -- --long`'s.
 */
export interface Scenario {
  readonly name: string;
  /** The fault kills a process that holds client connections: a client may see a reset then. */
  readonly dropsClientConnections?: boolean;
  readonly faultMs: { readonly short: number; readonly long: number };
  /** Before the load starts (not timed): brings the topology into the shape the fault needs. */
  setup?(t: Topology): Promise<void>;
  /** Promises checked on the attempts made during the fault. */
  readonly expect?: {
    /** Catalog and product reads keep succeeding (served by the replica or the cache). */
    readonly readsContinue?: boolean;
    /** Writes that fail, fail within this long (503, not a wait for a dead primary). */
    readonly writesFailWithinMs?: number;
  };
  inject(t: Topology): Promise<void>;
  heal(t: Topology): Promise<void>;
  /**
   * After the heal: what shows the fault really reached the service — a scenario whose fault
   * changed nothing (an app that bypassed the proxy, a kill that missed) proves nothing. Returns
   * null when the effect was seen, else what was missing. Only the baseline has none.
   */
  effect?(seen: FaultSeen, t: Topology): Promise<string | null>;
}

/** What the run saw while the fault was on (from the inject until the heal). */
export interface FaultSeen {
  /** Attempts started while the fault was on. */
  readonly during: readonly Attempt[];
  /**
   * Attempts in flight at any moment of the fault, those started before it included: with a few
   * closed-loop clients and a 3 s fault, every client may be held by a request it began just
   * before, and none starts during the fault (seen in CI).
   */
  readonly inFlight: readonly Attempt[];
  /** Every `check: state` pair /ready reported while the fault was on (for example `cache: degraded`). */
  readonly ready: ReadonlySet<string>;
  /** Connections each fault proxy reset or closed while the fault was on. */
  readonly cut: Readonly<Record<keyof Topology['proxies'], number>>;
}

type Effect = NonNullable<Scenario['effect']>;

const databaseOps = new Set(['login', 'refresh', 'order']);
const durations = (attempts: readonly Attempt[]) =>
  attempts.map((a) => a.end - a.start).sort((a, b) => a - b);

/** Some request needing the database was refused with 503 + Retry-After (it could not be served). */
const refused: Effect = async (seen) =>
  seen.inFlight.some((a) => a.kind === '503' && databaseOps.has(a.op))
    ? null
    : 'no request that needs the database was answered 503 while it could not serve';

/** Some request needing the database, in flight during the fault, waited at least this long. */
const heldFor =
  (ms: number): Effect =>
  async (seen) => {
    const slowest = durations(seen.inFlight.filter((a) => databaseOps.has(a.op))).at(-1) ?? 0;
    return slowest >= ms
      ? null
      : `no request that needs the database waited ${ms} ms (slowest ${slowest} ms)`;
  };

/**
 * Completed orders started during the fault (five round trips each) took at least the added
 * latency, as a median; when none started during it (every client held by an earlier request),
 * one in flight during it took that long.
 */
const ordersSlowed =
  (latencyMs: number): Effect =>
  async (seen, t) => {
    const orders = durations(seen.during.filter((a) => a.op === 'order' && a.kind === 'ok'));
    const median = orders[Math.floor(orders.length / 2)];
    if (median === undefined) return heldFor(latencyMs)(seen, t);
    return median >= latencyMs
      ? null
      : `orders completed in a median ${median} ms, under the ${latencyMs} ms added to every round trip`;
  };

/** The proxy reset or closed connections of the service's. */
const cutBy =
  (proxy: keyof FaultSeen['cut']): Effect =>
  async (seen) =>
    seen.cut[proxy] > 0 ? null : `the ${proxy} fault proxy cut no connection`;

/** /ready reported this `check: state` pair at least once. */
const readyShowed =
  (pair: string): Effect =>
  async (seen) =>
    seen.ready.has(pair) ? null : `/ready never reported ${pair} (saw ${[...seen.ready].join(', ')})`;

/** Any one of the effects seen is enough; the problem names what each missed. */
const anyOf =
  (...effects: Effect[]): Effect =>
  async (seen, t) => {
    const missed: string[] = [];
    for (const effect of effects) {
      const problem = await effect(seen, t);
      if (problem === null) return null;
      missed.push(problem);
    }
    return missed.join('; and ');
  };

const toxics = new Map<string, Toxic>();

function toxicScenario(
  name: string,
  proxy: keyof Topology['proxies'],
  spec: Parameters<Topology['proxies']['postgres']['add']>[0],
  effect: Effect,
  faultMs = { short: 3000, long: 30_000 },
  setup?: Scenario['setup'],
): Scenario {
  return {
    name,
    faultMs,
    effect,
    ...(setup === undefined ? {} : { setup }),
    async inject(t) {
      toxics.set(name, t.proxies[proxy].add(spec));
    },
    async heal(t) {
      const toxic = toxics.get(name);
      if (toxic !== undefined) t.proxies[proxy].remove(toxic);
    },
  };
}

/** A fault between the workers and PgBouncer (they are pointed at it first). */
function pgbouncerScenario(
  name: string,
  spec: Parameters<typeof toxicScenario>[2],
  effect: Effect,
): Scenario {
  return toxicScenario(name, 'pgbouncer', spec, effect, undefined, (t) => t.databaseVia('pgbouncer'));
}

/** A fault held 3 s: a request that met it waited most of that, or was refused by its deadline. */
const heldOrRefused = anyOf(refused, heldFor(2000));

/** PM2 log files of the workers (out_file and log_file), pointed at /dev/full: every write is ENOSPC. */
const logFiles = ['out.log', 'combined.log'];

export const scenarios: readonly Scenario[] = [
  {
    name: 'baseline (no fault)',
    faultMs: { short: 3000, long: 30_000 },
    async inject() {},
    async heal() {},
  },
  toxicScenario(
    'PostgreSQL +200 ms latency',
    'postgres',
    { type: 'latency', latencyMs: 200, jitterMs: 20 },
    ordersSlowed(200),
  ),
  toxicScenario(
    'PostgreSQL +2 s latency',
    'postgres',
    { type: 'latency', latencyMs: 2000, jitterMs: 100 },
    heldFor(2000),
  ),
  {
    name: 'PostgreSQL down',
    faultMs: { short: 3000, long: 5000 },
    effect: refused,
    inject: (t) => t.proxies.postgres.down(),
    heal: (t) => t.proxies.postgres.up(),
  },
  toxicScenario(
    'PostgreSQL hung (accepts, never answers)',
    'postgres',
    { type: 'timeout', timeoutMs: 0 },
    heldOrRefused,
  ),
  toxicScenario(
    'PostgreSQL connections reset',
    'postgres',
    { type: 'reset_peer', timeoutMs: 0 },
    cutBy('postgres'),
  ),
  {
    name: 'primary killed, replica present',
    faultMs: { short: 3000, long: 30_000 },
    // The pool's connect timeout (2 s) bounds a write's wait for the dead primary.
    expect: { readsContinue: true, writesFailWithinMs: 4000 },
    effect: refused,
    inject: (t) => t.postgres.primary.crash(),
    heal: (t) => t.postgres.primary.restart(),
  },
  toxicScenario('Redis connections reset', 'redis', { type: 'reset_peer', timeoutMs: 0 }, cutBy('redis')),
  // Nothing fails for the clients when Redis does (the service carries on without it): the
  // evidence is the service's own view of its cache.
  toxicScenario(
    'Redis hung (accepts, never answers)',
    'redis',
    { type: 'timeout', timeoutMs: 0 },
    readyShowed('cache: degraded'),
  ),
  {
    name: 'Redis down',
    faultMs: { short: 3000, long: 30_000 },
    effect: anyOf(cutBy('redis'), readyShowed('cache: degraded')),
    inject: (t) => t.proxies.redis.down(),
    heal: (t) => t.proxies.redis.up(),
  },
  killWorker(),
  {
    name: 'log disk full (ENOSPC)',
    faultMs: { short: 3000, long: 30_000 },
    async inject(t) {
      for (const file of logFiles) {
        const path = join(t.app.logDir, file);
        renameSync(path, `${path}.kept`);
        symlinkSync('/dev/full', path);
      }
      await t.app.pm2('reloadLogs');
    },
    async heal(t) {
      for (const file of logFiles) {
        const path = join(t.app.logDir, file);
        rmSync(path, { force: true });
        renameSync(`${path}.kept`, path);
      }
      await t.app.pm2('reloadLogs');
    },
    // Lines written while the disk was full were dropped and counted: the warning comes with the
    // first line that can be written again.
    async effect(_seen, t) {
      const path = join(t.app.logDir, 'out.log');
      try {
        await waitUntil(async () => readFileSync(path, 'utf8').includes('"event":"log_lines_dropped"'), {
          timeoutMs: 60_000,
          intervalMs: 250,
          what: 'the log_lines_dropped warning',
        });
        return null;
      } catch {
        return `no log_lines_dropped warning in ${path} a minute after the disk had room again`;
      }
    },
  },
  {
    // Last: from here on the workers reach the primary through PgBouncer (a reload each way would
    // cost CI two more rolling restarts). The app's connections to PgBouncer all break at once, and
    // for the fault nothing listens on its port.
    name: 'PgBouncer restarted',
    faultMs: { short: 3000, long: 30_000 },
    setup: (t) => t.databaseVia('pgbouncer'),
    effect: refused,
    inject: (t) => t.pgbouncer.kill(),
    heal: (t) => t.pgbouncer.start(),
  },
  // Through PgBouncer too (set up by the scenario before): a pooler that accepts and never
  // answers, and one whose connections are reset — the round-trip deadline and the pool's
  // reconnect must hold the same way as with PostgreSQL itself.
  pgbouncerScenario(
    'PgBouncer hung (accepts, never answers)',
    { type: 'timeout', timeoutMs: 0 },
    heldOrRefused,
  ),
  pgbouncerScenario('PgBouncer connections reset', { type: 'reset_peer', timeoutMs: 0 }, cutBy('pgbouncer')),
];

/** kill -9 of one PM2 worker; the heal waits for PM2 to have two online again. */
function killWorker(): Scenario {
  let victim: number | undefined;
  return {
    name: 'app worker kill -9',
    dropsClientConnections: true,
    faultMs: { short: 3000, long: 30_000 },
    async inject(t) {
      const [worker] = await t.app.workers();
      if (worker === undefined) throw new Error('no PM2 worker to kill');
      victim = worker.pid;
      process.kill(worker.pid, 'SIGKILL');
    },
    async heal(t) {
      await waitUntil(async () => (await t.app.workers()).filter((w) => w.status === 'online').length === 2, {
        timeoutMs: 120_000,
        intervalMs: 200,
        what: 'PM2 to restart the killed worker',
      });
    },
    // The two online workers are not the one killed: PM2 started a new process.
    async effect(_seen, t) {
      const pids = (await t.app.workers()).map((w) => w.pid);
      return victim !== undefined && !pids.includes(victim)
        ? null
        : `the killed worker ${victim} is still among PM2's workers (${pids.join(', ')})`;
    },
  };
}
