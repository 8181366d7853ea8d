import type { Generated, Insertable, Selectable } from 'kysely';
import type { CreatedAt, Money, UpdatedAt } from '../../db/column-types.js';

export const orderStatuses = ['pending', 'paid', 'shipped', 'delivered', 'cancelled'] as const;
export type OrderStatus = (typeof orderStatuses)[number];

export interface OrdersTable {
  id: string;
  user_id: string;
  status: Generated<OrderStatus>;
  total_amount: Money;
  currency: string;
  created_at: CreatedAt;
  updated_at: UpdatedAt;
}

/** Order lines keep the product's sku, name and price as they were when the order was placed. */
export interface OrderItemsTable {
  id: string;
  order_id: string;
  product_id: string;
  sku: string;
  name: string;
  unit_price: Money;
  quantity: number;
  line_total: Money;
}

export type OrderRow = Selectable<OrdersTable>;
export type NewOrderRow = Insertable<OrdersTable>;
export type OrderItemRow = Selectable<OrderItemsTable>;
export type NewOrderItemRow = Insertable<OrderItemsTable>;
