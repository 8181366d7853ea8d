import type { Kysely, Transaction } from 'kysely';
import type { JobsTable } from '../jobs/jobs.table.js';
import type { AccountTokensTable } from '../modules/auth/account-tokens.table.js';
import type { RefreshTokensTable, SessionsTable } from '../modules/auth/sessions.table.js';
import type { FeatureFlagsTable } from '../modules/flags/flags.table.js';
import type { IdempotencyKeysTable } from '../modules/idempotency/idempotency.table.js';
import type { OrderItemsTable, OrdersTable } from '../modules/orders/orders.table.js';
import type { ProductsTable } from '../modules/products/products.table.js';
import type { UsersTable } from '../modules/users/users.table.js';

/** The whole schema, composed from the tables each feature module owns. */
export interface Database {
  users: UsersTable;
  sessions: SessionsTable;
  refresh_tokens: RefreshTokensTable;
  products: ProductsTable;
  orders: OrdersTable;
  order_items: OrderItemsTable;
  idempotency_keys: IdempotencyKeysTable;
  feature_flags: FeatureFlagsTable;
  account_tokens: AccountTokensTable;
  jobs: JobsTable;
}

export type Engine = 'sqlite' | 'postgres';

/** A query handle: the database itself or an open transaction. Repositories accept either. */
export type Db = Kysely<Database>;
export type Trx = Transaction<Database>;
export type Queryable = Db | Trx;
