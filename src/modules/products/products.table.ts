import type { Generated, Insertable, Selectable, Updateable } from 'kysely';
import type { CreatedAt, Money, NullableTimestamp, UpdatedAt } from '../../db/column-types.js';

export interface ProductsTable {
  id: string;
  sku: string;
  name: string;
  description: Generated<string>;
  price: Money;
  /** Never negative: a CHECK constraint backs up the conditional update that takes stock. */
  stock: number;
  created_at: CreatedAt;
  updated_at: UpdatedAt;
  /** Archived products are not listed or orderable; past orders keep referring to them. */
  archived_at: NullableTimestamp;
}

export type ProductRow = Selectable<ProductsTable>;
export type NewProductRow = Insertable<ProductsTable>;
export type ProductUpdate = Updateable<ProductsTable>;
