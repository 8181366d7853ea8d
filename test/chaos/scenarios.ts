import { renameSync, rmSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { Toxic } from '../harness/fault-proxy.js';
import { waitUntil } from '../harness/wait.js';
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
}

const toxics = new Map<string, Toxic>();

function toxicScenario(
  name: string,
  proxy: keyof Topology['proxies'],
  spec: Parameters<Topology['proxies']['postgres']['add']>[0],
  faultMs = { short: 3000, long: 30_000 },
  setup?: Scenario['setup'],
): Scenario {
  return {
    name,
    faultMs,
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
function pgbouncerScenario(name: string, spec: Parameters<typeof toxicScenario>[2]): Scenario {
  return toxicScenario(name, 'pgbouncer', spec, undefined, (t) => t.databaseVia('pgbouncer'));
}

/** PM2 log files of the workers (out_file and log_file), pointed at /dev/full: every write is ENOSPC. */
const logFiles = ['out.log', 'combined.log'];

export const scenarios: readonly Scenario[] = [
  {
    name: 'baseline (no fault)',
    faultMs: { short: 3000, long: 30_000 },
    async inject() {},
    async heal() {},
  },
  toxicScenario('PostgreSQL +200 ms latency', 'postgres', { type: 'latency', latencyMs: 200, jitterMs: 20 }),
  toxicScenario('PostgreSQL +2 s latency', 'postgres', { type: 'latency', latencyMs: 2000, jitterMs: 100 }),
  {
    name: 'PostgreSQL down',
    faultMs: { short: 3000, long: 5000 },
    inject: (t) => t.proxies.postgres.down(),
    heal: (t) => t.proxies.postgres.up(),
  },
  toxicScenario('PostgreSQL hung (accepts, never answers)', 'postgres', { type: 'timeout', timeoutMs: 0 }),
  toxicScenario('PostgreSQL connections reset', 'postgres', { type: 'reset_peer', timeoutMs: 0 }),
  {
    name: 'primary killed, replica present',
    faultMs: { short: 3000, long: 30_000 },
    // The pool's connect timeout (2 s) bounds a write's wait for the dead primary.
    expect: { readsContinue: true, writesFailWithinMs: 4000 },
    inject: (t) => t.postgres.primary.crash(),
    heal: (t) => t.postgres.primary.restart(),
  },
  toxicScenario('Redis connections reset', 'redis', { type: 'reset_peer', timeoutMs: 0 }),
  toxicScenario('Redis hung (accepts, never answers)', 'redis', { type: 'timeout', timeoutMs: 0 }),
  {
    name: 'Redis down',
    faultMs: { short: 3000, long: 30_000 },
    inject: (t) => t.proxies.redis.down(),
    heal: (t) => t.proxies.redis.up(),
  },
  {
    name: 'app worker kill -9',
    dropsClientConnections: true,
    faultMs: { short: 3000, long: 30_000 },
    async inject(t) {
      const [victim] = await t.app.workers();
      if (victim === undefined) throw new Error('no PM2 worker to kill');
      process.kill(victim.pid, 'SIGKILL');
    },
    async heal(t) {
      await waitUntil(async () => (await t.app.workers()).filter((w) => w.status === 'online').length === 2, {
        timeoutMs: 120_000,
        intervalMs: 200,
        what: 'PM2 to restart the killed worker',
      });
    },
  },
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
  },
  {
    // Last: from here on the workers reach the primary through PgBouncer (a reload each way would
    // cost CI two more rolling restarts). The app's connections to PgBouncer all break at once, and
    // for the fault nothing listens on its port.
    name: 'PgBouncer restarted',
    faultMs: { short: 3000, long: 30_000 },
    setup: (t) => t.databaseVia('pgbouncer'),
    inject: (t) => t.pgbouncer.kill(),
    heal: (t) => t.pgbouncer.start(),
  },
  // Through PgBouncer too (set up by the scenario before): a pooler that accepts and never
  // answers, and one whose connections are reset — the round-trip deadline and the pool's
  // reconnect must hold the same way as with PostgreSQL itself.
  pgbouncerScenario('PgBouncer hung (accepts, never answers)', { type: 'timeout', timeoutMs: 0 }),
  pgbouncerScenario('PgBouncer connections reset', { type: 'reset_peer', timeoutMs: 0 }),
];
