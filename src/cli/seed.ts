import { migrateToLatest, pendingMigrations } from '../db/migrator.js';
import { seedDemoCatalog } from './demo-catalog.js';
import { CliError, runCli } from './run.js';
import { tellRunningServices } from './running-services.js';

/**
 * `npm run db:seed`: a demo catalog of 1,000 products (DEMO-0001 … DEMO-1000) for trying the API,
 * the benchmarks and the storefront. Deterministic and idempotent: running it again adds nothing.
 * It creates no user accounts: the first admin comes from `npm run user:create-admin`.
 */
await runCli({ usage: 'usage: npm run db:seed' }, async ({ db, engine }, config) => {
  if (config.database.migrateOnStart) await migrateToLatest(db, engine);
  const pending = await pendingMigrations(db, engine);
  if (pending.length > 0)
    throw new CliError(`pending migrations (${pending.join(', ')}): run \`npm run db:migrate\` first`);
  const inserted = await seedDemoCatalog(db);
  console.log(`${engine}: seeded ${inserted} new demo products (1,000 in the demo catalog)`);
  if (inserted > 0) console.log(await tellRunningServices(config));
});
