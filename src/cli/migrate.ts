import { createInterface } from 'node:readline/promises';
import { sql } from 'kysely';
import { latestApplied, migrateDown, migrateToLatest } from '../db/migrator.js';
import { describeDatabase } from '../lib/targets.js';
import { CliError, runCli } from './run.js';

/**
 * `npm run db:migrate` applies pending migrations. `-- --down` reverts the latest one: it says what
 * that drops (tables and their row counts), asks on a terminal, needs `--yes` elsewhere, and in
 * production refuses unless `--allow-production` is given too.
 */
await runCli(
  {
    usage: 'usage: npm run db:migrate [-- --down [--yes] [--allow-production]]',
    migrations: true,
    help: [
      '  (no flags)          apply every pending migration',
      '  --down              revert the latest migration (says what it drops; asks on a terminal)',
      '  --yes               do not ask (needed when stdin is not a terminal)',
      '  --allow-production  required with --down when NODE_ENV=production',
    ].join('\n'),
    options: { down: { type: 'boolean' }, yes: { type: 'boolean' }, 'allow-production': { type: 'boolean' } },
  },
  async ({ db, engine }, config, args) => {
    if (args.down !== true) {
      if (args.yes === true || args['allow-production'] === true)
        throw new CliError('--yes and --allow-production only go with --down');
      const names = await migrateToLatest(db, engine);
      console.log(
        names.length === 0 ? `${engine}: nothing to apply` : `${engine}: applied ${names.join(', ')}`,
      );
      return;
    }
    const latest = await latestApplied(db, engine);
    if (latest === undefined) {
      console.log(`${engine}: nothing to revert`);
      return;
    }
    const counts: string[] = [];
    for (const table of latest.drops) {
      const row = await sql<{ n: number | string }>`select count(*) as n from ${sql.table(table)}`
        .execute(db)
        .then((r) => r.rows[0]?.n ?? 0)
        .catch(() => '?');
      counts.push(`${table} (${row} rows)`);
    }
    const what = `reverting ${latest.name} on ${describeDatabase(config.database)} drops ${counts.length === 0 ? 'no tables' : `tables ${counts.join(', ')}`}`;
    if (config.env === 'production' && args['allow-production'] !== true)
      throw new CliError(`refused: NODE_ENV=production and ${what}. Add --allow-production if you mean it.`);
    if (args.yes !== true) {
      if (!process.stdin.isTTY)
        throw new CliError(`refused: ${what}. Nobody to ask here: add --yes if you mean it.`);
      const prompt = createInterface({ input: process.stdin, output: process.stderr });
      const answer = await prompt.question(`${what}. Type "yes" to continue: `);
      prompt.close();
      if (answer.trim() !== 'yes') throw new CliError('cancelled: nothing was reverted');
    }
    const names = await migrateDown(db, engine);
    console.log(
      names.length === 0 ? `${engine}: nothing to revert` : `${engine}: reverted ${names.join(', ')}`,
    );
  },
);
