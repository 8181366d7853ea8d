import { pendingMigrations } from '../db/migrator.js';
import { deleteExpired } from '../modules/idempotency/idempotency.service.js';
import { CliError, runCli } from './run.js';

/**
 * `npm run idempotency:cleanup`: deletes expired idempotency keys once (the service's clean-up job also does it
 * every IDEMPOTENCY_CLEANUP_INTERVAL_SECONDS; use this from cron when that is 0).
 */
await runCli({ usage: 'usage: npm run idempotency:cleanup' }, async ({ db, engine }) => {
  const pending = await pendingMigrations(db, engine);
  if (pending.length > 0)
    throw new CliError(`pending migrations (${pending.join(', ')}): run \`npm run db:migrate\` first`);
  const removed = await deleteExpired(db);
  console.log(`${engine}: removed ${removed} expired idempotency keys`);
});
