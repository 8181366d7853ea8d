import { writeFileSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { ensureBuilt } from '../harness/pm2.js';
import { formatTable, runScenarios } from './run.js';
import { scenarios } from './scenarios.js';
import { chaosLimits, startTopology } from './topology.js';

/**
 * `npm run chaos` — every scenario against a throwaway topology under mixed load, then one table.
 * `-- --long`: the full fault durations (30 s; PostgreSQL down 5 s). `-- --only <text>`: the
 * scenarios whose name contains the text. `-- --out <file>`: also writes the table as Markdown with
 * the date, duration and machine load (bench/results/ keeps the recorded runs). Exits 1 when a data
 * check or an expectation failed.
 */
const args = process.argv.slice(2);
const long = args.includes('--long');
const option = (name: string) => (args.includes(name) ? (args[args.indexOf(name) + 1] ?? '') : '');
const only = option('--only');
const out = option('--out');
const log = (line: string) => process.stderr.write(`${line}\n`);
const load = () =>
  loadavg()
    .map((n) => n.toFixed(1))
    .join(' / ');

const attemptTimeoutMs = chaosLimits.slowestAnswerMs + 2000;

await ensureBuilt();
const started = new Date();
const loadAtStart = load();
const topology = await startTopology({ customers: 8, log });
let failed = false;
try {
  const list = scenarios.filter((s) => s.name.toLowerCase().includes(only.toLowerCase()));
  // The service's slowest answer (10 s) and 2 s for the machine: an attempt past that is a hang.
  const rows = await runScenarios(topology, list, { long, clients: 8, attemptTimeoutMs, log });
  const table = formatTable(rows);
  process.stdout.write(`\n${table}\n`);
  failed = rows.some((r) => r.data.length > 0 || r.unexpected.length > 0);
  if (out !== '') {
    const minutes = ((Date.now() - started.getTime()) / 60_000).toFixed(1);
    writeFileSync(
      out,
      [
        `# npm run chaos${long ? ' -- --long' : ''}${only === '' ? '' : ` --only ${only}`}`,
        '',
        `- started ${started.toISOString()}, took ${minutes} min; ${failed ? 'FAILED' : 'passed'}`,
        `- machine: ${availableParallelism()} cores, load average (1 / 5 / 15 min) ${loadAtStart} at the start, ${load()} at the end`,
        `- Node ${process.version}; 8 clients (every third only browses); attempt limit ${attemptTimeoutMs / 1000} s`,
        '',
        table,
        '',
      ].join('\n'),
    );
  }
} finally {
  await topology.destroy();
}
process.exit(failed ? 1 : 0);
