import { migrateDown, migrateToLatest } from '../db/migrator.js';
import { runCli } from './run.js';

/** `npm run db:migrate` applies pending migrations; `-- --down` reverts the latest one. */
await runCli(async ({ db, engine }) => {
  const down = process.argv.includes('--down');
  const names = down ? await migrateDown(db, engine) : await migrateToLatest(db, engine);
  const verb = down ? 'reverted' : 'applied';
  console.log(
    names.length === 0
      ? `${engine}: nothing to ${down ? 'revert' : 'apply'}`
      : `${engine}: ${verb} ${names.join(', ')}`,
  );
});
