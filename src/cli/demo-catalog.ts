import { randomUUID } from 'node:crypto';
import type { Db } from '../db/database.js';
import { formatCents } from '../lib/money.js';
import { insertProductsSkippingExisting } from '../modules/products/products.repository.js';

/**
 * The demo catalog (`npm run db:seed`, `npm run demo`): 1,000 products, DEMO-0001 … DEMO-1000.
 * Deterministic and idempotent: existing skus are skipped, so a second run adds nothing and never
 * undoes an admin's edits.
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

/** Inserts the demo products that are missing; returns how many were added. */
export async function seedDemoCatalog(db: Db): Promise<number> {
  let inserted = 0;
  for (let start = 1; start <= 1000; start += 100) {
    const rows = Array.from({ length: 100 }, (_, i) => ({ id: randomUUID(), ...demoProduct(start + i) }));
    inserted += await insertProductsSkippingExisting(db, rows);
  }
  return inserted;
}
