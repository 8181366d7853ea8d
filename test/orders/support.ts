import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { type Account, bearer } from '../support/accounts.js';

export const orderKeys = [
  'createdAt',
  'currency',
  'id',
  'items',
  'status',
  'totalAmount',
  'updatedAt',
  'userId',
];
export const orderItemKeys = ['lineTotal', 'name', 'productId', 'quantity', 'sku', 'unitPrice'];

export interface Line {
  readonly productId: string;
  readonly quantity: number;
}

export function placeOrder(
  app: FastifyInstance,
  account: Account,
  items: readonly Line[],
  headers: Record<string, string> = {},
): Promise<LightMyRequestResponse> {
  return app.inject({
    method: 'POST',
    url: '/api/orders',
    headers: { ...bearer(account.accessToken), ...headers },
    payload: { items },
  });
}

export async function stockOf(app: FastifyInstance, productId: string): Promise<number> {
  const row = await app.database.db
    .selectFrom('products')
    .select('stock')
    .where('id', '=', productId)
    .executeTakeFirstOrThrow();
  return row.stock;
}

/** Units of the product in orders that still hold them (everything but cancelled orders). */
export async function unitsHeld(app: FastifyInstance, productId: string): Promise<number> {
  const row = await app.database.db
    .selectFrom('order_items')
    .innerJoin('orders', 'orders.id', 'order_items.order_id')
    .select((eb) => eb.fn.sum<number | string | null>('order_items.quantity').as('units'))
    .where('order_items.product_id', '=', productId)
    .where('orders.status', '!=', 'cancelled')
    .executeTakeFirstOrThrow();
  return Number(row.units ?? 0);
}

export async function orderCount(app: FastifyInstance): Promise<number> {
  const row = await app.database.db
    .selectFrom('orders')
    .select((eb) => eb.fn.countAll<number | string>().as('n'))
    .executeTakeFirstOrThrow();
  return Number(row.n);
}
