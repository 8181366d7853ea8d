import { sql } from 'kysely';
import type { Engine, Queryable } from '../../db/database.js';
import { olderThan } from '../../db/keyset.js';
import {
  type StoredResponse,
  storeResponse,
  storeResponseQuery,
} from '../idempotency/idempotency.repository.js';
import type { NewOrderItemRow, NewOrderRow, OrderItemRow, OrderRow, OrderStatus } from './orders.table.js';

export interface TakenProduct {
  readonly id: string;
  readonly sku: string;
  readonly name: string;
  readonly price: string | number;
}

/**
 * Takes `quantity` units if the product is orderable and has them, in one conditional update that
 * also locks the row: stock can never go below zero, whatever runs concurrently, on either engine.
 * Returns the product as it is at this moment (its price is the price of the order line), or
 * undefined when nothing was taken.
 */
export async function takeStock(
  trx: Queryable,
  productId: string,
  quantity: number,
  at: string,
): Promise<TakenProduct | undefined> {
  return trx
    .updateTable('products')
    .set((eb) => ({ stock: eb('stock', '-', quantity), updated_at: at }))
    .where('id', '=', productId)
    .where('stock', '>=', quantity)
    .where('archived_at', 'is', null)
    .returning(['id', 'sku', 'name', 'price'])
    .executeTakeFirst();
}

export async function returnStock(
  trx: Queryable,
  productId: string,
  quantity: number,
  at: string,
): Promise<void> {
  await trx
    .updateTable('products')
    .set((eb) => ({ stock: eb('stock', '+', quantity), updated_at: at }))
    .where('id', '=', productId)
    .execute();
}

/** Why stock could not be taken: the product's current stock and archival, if it exists. */
export async function findProductAvailability(
  trx: Queryable,
  productId: string,
): Promise<{ sku: string; stock: number; archived_at: string | null } | undefined> {
  return trx
    .selectFrom('products')
    .select(['sku', 'stock', 'archived_at'])
    .where('id', '=', productId)
    .executeTakeFirst();
}

export async function insertOrder(trx: Queryable, row: NewOrderRow): Promise<OrderRow> {
  return trx.insertInto('orders').values(row).returningAll().executeTakeFirstOrThrow();
}

export async function insertOrderItems(
  trx: Queryable,
  rows: readonly NewOrderItemRow[],
): Promise<OrderItemRow[]> {
  return trx
    .insertInto('order_items')
    .values([...rows])
    .returningAll()
    .execute();
}

/**
 * Writes a placed order: its row, its lines and, when given, the idempotency key's stored answer,
 * inside the caller's transaction. On PostgreSQL that is one statement (data-modifying CTEs: one
 * round trip instead of three; the lines' foreign key is checked at the end of the statement); on
 * SQLite, which has no data-modifying CTEs and no network, three. Returns false when the answer was
 * not stored (the key's hold was lost): the caller must roll back.
 */
export async function recordOrder(
  trx: Queryable,
  engine: Engine,
  order: NewOrderRow,
  items: readonly NewOrderItemRow[],
  response?: StoredResponse,
): Promise<boolean> {
  if (engine === 'postgres') {
    const writes = trx
      .with('placed_order', (db) => db.insertInto('orders').values(order).returning('id'))
      .with('placed_items', (db) =>
        db
          .insertInto('order_items')
          .values([...items])
          .returning('id'),
      );
    if (response === undefined) {
      await writes.selectNoFrom(sql<number>`1`.as('done')).execute();
      return true;
    }
    const row = await writes
      .with('stored', (db) => storeResponseQuery(db, response).returning('key'))
      .selectNoFrom(sql<string>`(select count(*) from stored)`.as('stored'))
      .executeTakeFirstOrThrow();
    return Number(row.stored) === 1;
  }
  await insertOrder(trx, order);
  await insertOrderItems(trx, items);
  return response === undefined || (await storeResponse(trx, response.holder, response.response));
}

export async function findOrder(db: Queryable, id: string): Promise<OrderRow | undefined> {
  return db.selectFrom('orders').selectAll().where('id', '=', id).executeTakeFirst();
}

/** The lines of these orders, by order and then product (the order lines are listed in). */
export async function findOrderItems(db: Queryable, orderIds: readonly string[]): Promise<OrderItemRow[]> {
  if (orderIds.length === 0) return [];
  return db
    .selectFrom('order_items')
    .selectAll()
    .where('order_id', 'in', [...orderIds])
    .orderBy('order_id')
    .orderBy('product_id')
    .execute();
}

/** Newest first, keyset-paginated on (created_at, id). */
export async function listOrders(
  db: Queryable,
  options: {
    limit: number;
    userId?: string;
    status?: OrderStatus;
    after?: readonly [createdAt: string, id: string];
  },
): Promise<OrderRow[]> {
  let query = db.selectFrom('orders').selectAll();
  if (options.userId !== undefined) query = query.where('user_id', '=', options.userId);
  if (options.status !== undefined) query = query.where('status', '=', options.status);
  if (options.after !== undefined) query = query.where(olderThan(options.after));
  return query
    .orderBy('created_at', 'desc')
    .orderBy('id', 'desc')
    .limit(options.limit + 1)
    .execute();
}

/**
 * Moves the order to `to` only if it is in one of `from` (and, when given, belongs to `ownerId`):
 * a conditional update, so two concurrent moves cannot both succeed (nor return stock twice).
 */
export async function transitionOrder(
  trx: Queryable,
  options: { id: string; from: readonly OrderStatus[]; to: OrderStatus; at: string; ownerId?: string },
): Promise<OrderRow | undefined> {
  if (options.from.length === 0) return undefined;
  let query = trx
    .updateTable('orders')
    .set({ status: options.to, updated_at: options.at })
    .where('id', '=', options.id)
    .where('status', 'in', [...options.from]);
  if (options.ownerId !== undefined) query = query.where('user_id', '=', options.ownerId);
  return query.returningAll().executeTakeFirst();
}
