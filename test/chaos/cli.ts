import { ensureBuilt } from '../harness/pm2.js';
import { formatTable, runScenarios } from './run.js';
import { scenarios } from './scenarios.js';
import { startTopology } from './topology.js';

/**
 * `npm run chaos` — every scenario against a throwaway topology under mixed load, then one table.
 * `-- --long`: the full fault durations (30 s; PostgreSQL down 5 s). `-- --only <text>`: the
 * scenarios whose name contains the text. Exits 1 when a data check or an expectation failed.
 */
const args = process.argv.slice(2);
const long = args.includes('--long');
const only = args.includes('--only') ? (args[args.indexOf('--only') + 1] ?? '') : '';
const log = (line: string) => process.stderr.write(`${line}\n`);

await ensureBuilt();
const topology = await startTopology({ customers: 8, log });
let failed = false;
try {
  const list = scenarios.filter((s) => s.name.toLowerCase().includes(only.toLowerCase()));
  const rows = await runScenarios(topology, list, { long, clients: 8, attemptTimeoutMs: 10_000, log });
  process.stdout.write(`\n${formatTable(rows)}\n`);
  failed = rows.some((r) => r.data.length > 0 || r.unexpected.length > 0);
} finally {
  await topology.destroy();
}
process.exit(failed ? 1 : 0);
