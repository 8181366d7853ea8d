import { randomUUID } from 'node:crypto';
import { migrateToLatest, pendingMigrations } from '../db/migrator.js';
import { formatCents } from '../lib/money.js';
import { insertProductsSkippingExisting } from '../modules/products/products.repository.js';
import { CliError, runCli } from './run.js';

/**
 * `npm run db:seed`: a demo catalog of 1,000 products (DEMO-0001 … DEMO-1000) for trying the API,
 * the benchmarks and the storefront. Deterministic and idempotent: running it again adds nothing.
 * It creates no user accounts: the first admin comes from `npm run user:create-admin`.
 */
const adjectives = ['Classic', 'Compact', 'Deluxe', 'Everyday', 'Heavy-duty', 'Lightweight', 'Pro', 'Travel'];
const nouns = [
  'Backpack',
  'Bottle',
  'Headphones',
  'Kettle',
  'Lamp',
  'Mug',
  'Notebook',
  'Umbrella',
  'Wallet',
  'Watch',
];

export function demoProduct(n: number) {
  const name = `${adjectives[n % adjectives.length]} ${nouns[Math.floor(n / adjectives.length) % nouns.length]} ${n}`;
  // Prices from 1.99 to 499.99 with awkward cents, so totals exercise exact decimal arithmetic.
  const cents = 199 + ((n * 7919) % 49_800);
  return {
    sku: `DEMO-${String(n).padStart(4, '0')}`,
    name,
    description: `${name}: demo product number ${n}.`,
    price: formatCents(cents),
    stock: (n * 37) % 500,
  };
}

await runCli(async ({ db, engine }, config) => {
  if (config.database.migrateOnStart) await migrateToLatest(db, engine);
  const pending = await pendingMigrations(db, engine);
  if (pending.length > 0)
    throw new CliError(`pending migrations (${pending.join(', ')}): run \`npm run db:migrate\` first`);
  let inserted = 0;
  for (let start = 1; start <= 1000; start += 100) {
    const rows = Array.from({ length: 100 }, (_, i) => ({ id: randomUUID(), ...demoProduct(start + i) }));
    // Existing skus are skipped, so the command is idempotent and never undoes an admin's edits.
    inserted += await insertProductsSkippingExisting(db, rows);
  }
  console.log(`${engine}: seeded ${inserted} new demo products (1,000 in the demo catalog)`);
});
