import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pgbouncerBinary } from '../harness/pgbouncer.js';
import { pgBinDir } from '../harness/postgres.js';
import { inCi } from '../harness/services.js';
import type { OrderIntent } from './load.js';
import { type ChaosRow, formatTable, runScenario } from './run.js';
import { scenarios } from './scenarios.js';
import { chaosLimits, startTopology, type Topology } from './topology.js';

/**
 * The short chaos suite (CI): every scenario of `npm run chaos` with a few seconds of fault, one
 * topology for all of them. Fails on a lost or duplicated order, a broken invariant, a request
 * hanging past its limit, any 5xx that is not a 503 with Retry-After, or a fault that had no
 * visible effect on the service.
 */
function missingTools(): string | false {
  for (const [tool, bin] of [
    ['PostgreSQL 15 server binaries', join(pgBinDir(), 'pg_ctl')],
    ['redis-server', 'redis-server'],
    ['pgbouncer', pgbouncerBinary() ?? 'pgbouncer'],
  ] as const) {
    if (spawnSync(bin, ['--version']).status === 0) continue;
    const message = `${tool} not found (${bin}); install: apt-get install -y postgresql redis-server pgbouncer`;
    if (inCi) throw new Error(`CI requires ${message}`);
    return message;
  }
  return false;
}

describe('chaos (short): every dependency fails under load, nothing acknowledged is lost', {
  skip: missingTools(),
}, () => {
  let topology: Topology;
  const intents: OrderIntent[] = [];
  const rows: ChaosRow[] = [];

  before(async () => {
    topology = await startTopology({ customers: 6 });
  });
  after(async () => {
    if (rows.length > 0) process.stdout.write(`\n${formatTable(rows)}\n`);
    await topology?.destroy();
  });

  for (const scenario of scenarios) {
    test(scenario.name, async () => {
      const row = await runScenario(topology, scenario, intents, {
        long: false,
        clients: 6,
        // The service answers every request within its slowest answer (10 s: chaosLimits). The
        // limit leaves 10 s more for two loaded cores; on those a worker rebooting after kill -9
        // took over 10 s for its first answer (CI, load 13), which is slow, not hung — that
        // scenario alone gets 30 s.
        attemptTimeoutMs:
          scenario.dropsClientConnections === true ? 30_000 : chaosLimits.slowestAnswerMs + 10_000,
        log: () => {},
      });
      rows.push(row);
      assert.deepEqual(row.data, [], 'data check');
      assert.deepEqual(row.unexpected, [], 'nothing that must not happen');
      assert.ok(row.requests > 0, 'load ran');
    });
  }
});
