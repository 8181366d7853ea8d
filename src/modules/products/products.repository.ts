import { sql } from 'kysely';
import type { Queryable } from '../../db/database.js';
import type { NewProductRow, ProductRow, ProductUpdate } from './products.table.js';

export async function insertProduct(db: Queryable, row: NewProductRow): Promise<ProductRow> {
  return db.insertInto('products').values(row).returningAll().executeTakeFirstOrThrow();
}

/** Inserts the rows whose sku is new and skips the others; returns how many were inserted. */
export async function insertProductsSkippingExisting(
  db: Queryable,
  rows: readonly NewProductRow[],
): Promise<number> {
  if (rows.length === 0) return 0;
  const result = await db
    .insertInto('products')
    .values([...rows])
    .onConflict((oc) => oc.column('sku').doNothing())
    .executeTakeFirst();
  return Number(result.numInsertedOrUpdatedRows ?? 0);
}

/** A product that is listed and orderable (not archived). */
export async function findActiveProduct(db: Queryable, id: string): Promise<ProductRow | undefined> {
  return db
    .selectFrom('products')
    .selectAll()
    .where('id', '=', id)
    .where('archived_at', 'is', null)
    .executeTakeFirst();
}

export async function updateActiveProduct(
  db: Queryable,
  id: string,
  changes: ProductUpdate,
): Promise<ProductRow | undefined> {
  return db
    .updateTable('products')
    .set(changes)
    .where('id', '=', id)
    .where('archived_at', 'is', null)
    .returningAll()
    .executeTakeFirst();
}

export async function archiveProduct(db: Queryable, id: string, at: string): Promise<boolean> {
  const result = await db
    .updateTable('products')
    .set({ archived_at: at, updated_at: at })
    .where('id', '=', id)
    .where('archived_at', 'is', null)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) > 0;
}

export interface ProductFilters {
  /** Lower-cased search text, matched anywhere in the name or the sku. */
  readonly q?: string;
  /** Inclusive bounds, as two-place decimal strings. */
  readonly minPrice?: string;
  readonly maxPrice?: string;
  readonly inStock?: boolean;
}

/**
 * Active products in sku order, keyset-paginated on the sku (unique, and indexed by its UNIQUE
 * constraint): a page starts after the last sku of the previous one, so inserts and archivals
 * elsewhere never shift or repeat items the way OFFSET would.
 */
export async function listActiveProducts(
  db: Queryable,
  options: ProductFilters & { readonly limit: number; readonly afterSku?: string },
): Promise<ProductRow[]> {
  let query = db.selectFrom('products').selectAll().where('archived_at', 'is', null);
  if (options.q !== undefined) {
    // Escape LIKE wildcards so a search for "50%" means that text.
    const pattern = `%${options.q.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
    query = query.where((eb) =>
      eb.or([
        eb(sql`lower(name)`, 'like', sql`${pattern} escape '\\'`),
        eb(sql`lower(sku)`, 'like', sql`${pattern} escape '\\'`),
      ]),
    );
  }
  if (options.minPrice !== undefined) query = query.where('price', '>=', options.minPrice);
  if (options.maxPrice !== undefined) query = query.where('price', '<=', options.maxPrice);
  if (options.inStock === true) query = query.where('stock', '>', 0);
  if (options.inStock === false) query = query.where('stock', '=', 0);
  if (options.afterSku !== undefined) query = query.where('sku', '>', options.afterSku);
  return query
    .orderBy('sku')
    .limit(options.limit + 1)
    .execute();
}
