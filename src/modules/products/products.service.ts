import { randomUUID } from 'node:crypto';
import type { Queryable } from '../../db/database.js';
import { classifyDbError } from '../../lib/db-errors.js';
import { ConflictError, NotFoundError, ValidationError } from '../../lib/errors.js';
import { formatCents, toCents } from '../../lib/money.js';
import { decodeCursor, type Page, toPage } from '../../lib/pagination.js';
import * as productsRepository from './products.repository.js';
import {
  type CreateProductInput,
  type ListProductsQuery,
  type Product,
  pageLimit,
  skuRegExp,
  type UpdateProductInput,
} from './products.schema.js';
import type { ProductRow, ProductUpdate } from './products.table.js';

export function toProduct(row: ProductRow, currency: string): Product {
  return {
    id: row.id,
    sku: row.sku,
    name: row.name,
    description: row.description,
    price: formatCents(toCents(row.price)),
    currency,
    stock: row.stock,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

/** A two-place decimal string, the one form amounts take in queries (both engines compare it exactly). */
function normalizeAmount(amount: string): string {
  return formatCents(toCents(amount));
}

function nameOrThrow(name: string): string {
  const trimmed = name.trim();
  if (trimmed === '')
    throw new ValidationError('The name is blank.', [{ path: '/body/name', message: 'is blank' }]);
  return trimmed;
}

function conflictOnSku(err: unknown): never {
  if (classifyDbError(err) === 'unique_violation') {
    throw new ConflictError('A product with that sku already exists.', [
      { path: '/body/sku', message: 'is already taken' },
    ]);
  }
  throw err;
}

export async function createProduct(db: Queryable, input: CreateProductInput): Promise<ProductRow> {
  const now = new Date().toISOString();
  try {
    return await productsRepository.insertProduct(db, {
      id: randomUUID(),
      sku: input.sku,
      name: nameOrThrow(input.name),
      description: input.description ?? '',
      price: normalizeAmount(input.price),
      stock: input.stock,
      created_at: now,
      updated_at: now,
    });
  } catch (err) {
    conflictOnSku(err);
  }
}

/** The active product with this id; undefined when there is none or it is archived. */
export async function findProduct(db: Queryable, id: string): Promise<ProductRow | undefined> {
  return productsRepository.findActiveProduct(db, id);
}

export async function updateProduct(
  db: Queryable,
  id: string,
  input: UpdateProductInput,
): Promise<ProductRow> {
  const changes: ProductUpdate = { updated_at: new Date().toISOString() };
  if (input.sku !== undefined) changes.sku = input.sku;
  if (input.name !== undefined) changes.name = nameOrThrow(input.name);
  if (input.description !== undefined) changes.description = input.description;
  if (input.price !== undefined) changes.price = normalizeAmount(input.price);
  if (input.stock !== undefined) changes.stock = input.stock;
  try {
    const row = await productsRepository.updateActiveProduct(db, id, changes);
    if (row === undefined) throw new NotFoundError('No such product.');
    return row;
  } catch (err) {
    conflictOnSku(err);
  }
}

/** Archives (never deletes): the product leaves the catalog; past orders keep referring to it. */
export async function archiveProduct(db: Queryable, id: string): Promise<void> {
  if (!(await productsRepository.archiveProduct(db, id, new Date().toISOString()))) {
    throw new NotFoundError('No such product.');
  }
}

/** A list query in one canonical form: the cache key of its page, and what the query runs with. */
export interface ProductListing extends productsRepository.ProductFilters {
  readonly limit: number;
  readonly afterSku?: string;
}

const invalidCursor = () =>
  new ValidationError('The cursor is not valid for this list.', [
    { path: '/querystring/cursor', message: 'is not a valid cursor' },
  ]);

/** Validates and normalises a list query (a forged cursor is a 400 here, before any cache or query). */
export function productListing(query: ListProductsQuery): ProductListing {
  let afterSku: string | undefined;
  if (query.cursor !== undefined) {
    afterSku = decodeCursor(query.cursor, ['text'])[0];
    if (afterSku === undefined || !skuRegExp.test(afterSku)) throw invalidCursor();
  }
  return {
    limit: pageLimit(query.limit),
    ...(afterSku === undefined ? {} : { afterSku }),
    ...(query.q === undefined ? {} : { q: query.q.toLowerCase() }),
    ...(query.minPrice === undefined ? {} : { minPrice: normalizeAmount(query.minPrice) }),
    ...(query.maxPrice === undefined ? {} : { maxPrice: normalizeAmount(query.maxPrice) }),
    ...(query.inStock === undefined ? {} : { inStock: query.inStock }),
  };
}

export async function listProducts(
  db: Queryable,
  listing: ProductListing,
  currency: string,
): Promise<Page<Product>> {
  const rows = await productsRepository.listActiveProducts(db, listing);
  return toPage(
    rows,
    listing.limit,
    (row) => toProduct(row, currency),
    (row) => [row.sku],
  );
}
