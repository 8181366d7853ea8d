import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from '../config.js';
import { migrateProduction, migrationStatus, ProductionMigrationError } from '../db/production-migrator.js';
import { describeDatabase } from '../lib/targets.js';
import { forMigrations } from './run.js';

/**
 * `npm run db:migrate:production`: the migrations of this release, applied without stalling
 * production (src/db/production-migrator.ts). The deploy runs it from the new release, under the
 * deploy lock, before any server switches (scripts/release-agent.sh migrate).
 *
 *   --lock-timeout-ms N       give up waiting for a table lock after N ms (default 2000) …
 *   --retries N               … and retry that many times (default 5)
 *   --statement-timeout-ms N  bound each statement (default 60000)
 *   --lock-wait-seconds N     wait that long for another migrator (default 600)
 *   --allow-contract NAMES    contract migrations every retained release knows (comma-separated)
 *   --status                  print {head, applied, contract} as JSON and change nothing
 * Exit codes: 0 done, 1 failed (the failing migration rolled back), 2 usage.
 */
const usage =
  'usage: npm run db:migrate:production -- [--lock-timeout-ms N] [--retries N] [--statement-timeout-ms N] [--lock-wait-seconds N] [--allow-contract a,b] [--status]';

function int(value: string | undefined, name: string, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  if (!/^\d+$/.test(value) || Number(value) < min || Number(value) > max) {
    process.stderr.write(`--${name} must be a whole number from ${min} to ${max}\n${usage}\n`);
    process.exit(2);
  }
  return Number(value);
}

async function main(): Promise<number> {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      strict: true,
      options: {
        'lock-timeout-ms': { type: 'string' },
        retries: { type: 'string' },
        'statement-timeout-ms': { type: 'string' },
        'lock-wait-seconds': { type: 'string' },
        'allow-contract': { type: 'string' },
        status: { type: 'boolean' },
        help: { type: 'boolean' },
      },
    }));
  } catch (err) {
    process.stderr.write(`${(err as Error).message.split('\n')[0]}\n${usage}\n`);
    return 2;
  }
  if (values.help === true) {
    process.stdout.write(`${usage}\n`);
    return 0;
  }
  let url: string | undefined;
  try {
    const config = forMigrations(loadConfig());
    url = config.database.url;
    process.stderr.write(`database: ${describeDatabase(config.database)}\n`);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      return 1;
    }
    throw err;
  }
  if (url === undefined) {
    process.stderr.write(
      'db:migrate:production needs PostgreSQL (DATABASE_URL); on SQLite use npm run db:migrate\n',
    );
    return 2;
  }
  if (values.status === true) {
    process.stdout.write(`${JSON.stringify(await migrationStatus(url))}\n`);
    return 0;
  }
  const allowed =
    typeof values['allow-contract'] === 'string' ? values['allow-contract'].split(',').filter(Boolean) : [];
  const result = await migrateProduction(url, {
    lockTimeoutMs: int(values['lock-timeout-ms'] as string | undefined, 'lock-timeout-ms', 2000, 10, 600_000),
    retries: int(values.retries as string | undefined, 'retries', 5, 0, 100),
    statementTimeoutMs: int(
      values['statement-timeout-ms'] as string | undefined,
      'statement-timeout-ms',
      60_000,
      100,
      86_400_000,
    ),
    lockWaitMs:
      int(values['lock-wait-seconds'] as string | undefined, 'lock-wait-seconds', 600, 0, 86_400) * 1000,
    contractAllowed: new Set(allowed),
    log: (line) => process.stderr.write(`${line}\n`),
  });
  process.stdout.write(
    `${result.applied.length === 0 ? 'nothing to apply' : `applied ${result.applied.join(', ')}`}; head ${result.head ?? 'none'}${
      result.deferred.length > 0 ? `; deferred ${result.deferred.join(', ')}` : ''
    }\n`,
  );
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(
      `${err instanceof ProductionMigrationError ? err.message : err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
    );
    process.exit(1);
  },
);
