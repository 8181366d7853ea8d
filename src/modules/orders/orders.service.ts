import { randomUUID } from 'node:crypto';
import type { preValidationAsyncHookHandler } from 'fastify';
import type { Db, Engine, Queryable } from '../../db/database.js';
import type { AuthContext } from '../../infra/http/auth-context.js';
import { AppError, ErrorCode, ForbiddenError, NotFoundError, ValidationError } from '../../lib/errors.js';
import { formatCents, toCents } from '../../lib/money.js';
import { decodeCursor, type Page, toPage } from '../../lib/pagination.js';
import { checkoutUnitLimit } from '../flags/flags.definitions.js';
import type { FeatureFlags } from '../flags/flags.service.js';
import type { StoredResponse } from '../idempotency/idempotency.repository.js';
import type { IdempotencySettings } from '../idempotency/idempotency.service.js';
import { IdempotencyKeyInUseError, IdempotencyKeyReusedError } from '../idempotency/idempotency.service.js';
import type { ProductCache } from '../products/products.cache.js';
import { pageLimit } from '../products/products.schema.js';
import type { OrderFailureReason, OrderMetrics } from './orders.metrics.js';
import * as ordersRepository from './orders.repository.js';
import type { ListOrdersQuery, Order } from './orders.schema.js';
import { sourcesOf } from './orders.state.js';
import type { OrderItemRow, OrderRow, OrderStatus } from './orders.table.js';

/** What the orders service needs, built once in the composition root. */
export interface OrdersDeps {
  readonly db: Db;
  /** PostgreSQL writes an order in one statement, SQLite in three (ordersRepository.recordOrder). */
  readonly engine: Engine;
  readonly currency: string;
  /** Stock changes invalidate the cached products (and list pages) before the response is sent. */
  readonly products: ProductCache;
  readonly idempotency: IdempotencySettings;
  readonly metrics: OrderMetrics;
  /** Checkout rules behind feature flags (`checkout-unit-limit`). */
  readonly flags: FeatureFlags;
  /** Set when placing orders needs a verified email (EMAIL_VERIFICATION_REQUIRED_FOR=orders). */
  readonly requireVerifiedEmail?: preValidationAsyncHookHandler;
}

export class InsufficientStockError extends AppError {
  constructor(index: number, product: { id: string; sku: string }, requested: number, available: number) {
    super(
      409,
      ErrorCode.INSUFFICIENT_STOCK,
      `Not enough stock of ${product.sku} (product ${product.id}): ${requested} requested, ${available} available.`,
      {
        errors: [
          {
            path: `/body/items/${index}/productId`,
            message: `product ${product.id} has ${available} in stock, ${requested} requested`,
          },
        ],
      },
    );
  }
}

/** Unknown or archived: the request names something that cannot be ordered (docs/api.md: 422). */
export class UnorderableProductError extends AppError {
  constructor(index: number, productId: string) {
    super(422, ErrorCode.VALIDATION_FAILED, `Product ${productId} does not exist or is no longer sold.`, {
      errors: [{ path: `/body/items/${index}/productId`, message: 'is not an orderable product' }],
    });
  }
}

/** The `checkout-unit-limit` rule (a feature flag): too many units of one product for one order. */
export class UnitLimitError extends AppError {
  constructor(lines: readonly OrderLine[]) {
    super(
      422,
      ErrorCode.VALIDATION_FAILED,
      `An order may hold at most ${checkoutUnitLimit} units of each product.`,
      {
        errors: lines.map((line) => ({
          path: `/body/items/${line.index}/quantity`,
          message: `must be at most ${checkoutUnitLimit}`,
        })),
      },
    );
  }
}

/** Checkout rules that depend on who is buying (feature flags); they run before any stock is taken. */
export async function checkCheckoutRules(
  deps: OrdersDeps,
  userId: string,
  lines: readonly OrderLine[],
): Promise<void> {
  const over = lines.filter((line) => line.quantity > checkoutUnitLimit);
  if (over.length > 0 && (await deps.flags.enabled('checkout-unit-limit', { userId })))
    throw new UnitLimitError(over);
}

export class InvalidTransitionError extends AppError {
  constructor(from: OrderStatus, to: OrderStatus) {
    super(409, ErrorCode.INVALID_STATE_TRANSITION, `An order that is ${from} cannot become ${to}.`);
  }
}

export function failureReason(err: unknown): OrderFailureReason {
  if (err instanceof InsufficientStockError) return 'insufficient_stock';
  if (err instanceof UnorderableProductError) return 'unorderable_product';
  if (err instanceof UnitLimitError) return 'unit_limit';
  if (err instanceof IdempotencyKeyInUseError) return 'idempotency_key_in_use';
  if (err instanceof IdempotencyKeyReusedError) return 'idempotency_key_reused';
  if (err instanceof AppError && err.status < 500) return 'invalid_request';
  return 'error';
}

export function toOrder(row: OrderRow, items: readonly OrderItemRow[]): Order {
  return {
    id: row.id,
    userId: row.user_id,
    status: row.status,
    totalAmount: formatCents(toCents(row.total_amount)),
    currency: row.currency,
    items: items.map((item) => ({
      productId: item.product_id,
      sku: item.sku,
      name: item.name,
      unitPrice: formatCents(toCents(item.unit_price)),
      quantity: item.quantity,
      lineTotal: formatCents(toCents(item.line_total)),
    })),
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

export interface OrderLine {
  readonly productId: string;
  readonly quantity: number;
  /** Position in the request, for error paths. */
  readonly index: number;
}

/**
 * The request's lines, ids lower-cased (PostgreSQL's uuid ignores case, SQLite's text does not) and
 * sorted by product: rows are always locked in the same order, so concurrent orders cannot deadlock.
 * A product named twice is a 400.
 */
export function orderLines(items: ReadonlyArray<{ productId: string; quantity: number }>): OrderLine[] {
  const seen = new Set<string>();
  const lines = items.map((item, index) => {
    const productId = item.productId.toLowerCase();
    if (seen.has(productId)) {
      throw new ValidationError('Each product may appear in one line only.', [
        { path: `/body/items/${index}/productId`, message: 'appears in an earlier line' },
      ]);
    }
    seen.add(productId);
    return { productId, quantity: item.quantity, index };
  });
  return lines.sort((a, b) => (a.productId < b.productId ? -1 : a.productId > b.productId ? 1 : 0));
}

/** What identifies an order request for idempotency: its lines, in canonical order. */
export function orderRequestOf(lines: readonly OrderLine[]): unknown {
  return { items: lines.map((line) => ({ productId: line.productId, quantity: line.quantity })) };
}

/**
 * Places an order in one transaction: takes the stock of every line (conditionally, in product
 * order), prices each line from the product row it just locked, computes the totals in integer
 * cents, and writes the order, its lines and the answer `respond` gives for the placed order (the
 * idempotency key's stored response) together — one statement on PostgreSQL. Any failure rolls all
 * of it back (a lost key hold: IdempotencyKeyInUseError). Then the cached products are invalidated.
 * On PostgreSQL an idempotent single-line order is five round trips: the key's insert, then begin,
 * the stock, the writes, commit.
 */
export async function placeOrder(
  deps: OrdersDeps,
  userId: string,
  lines: readonly OrderLine[],
  respond?: (order: Order) => StoredResponse,
): Promise<Order> {
  await checkCheckoutRules(deps, userId, lines);
  const order = await deps.db.transaction().execute(async (trx) => {
    const at = new Date().toISOString();
    const orderId = randomUUID();
    const items = [];
    let totalCents = 0;
    for (const line of lines) {
      const product = await ordersRepository.takeStock(trx, line.productId, line.quantity, at);
      if (product === undefined) {
        const current = await ordersRepository.findProductAvailability(trx, line.productId);
        if (current === undefined || current.archived_at !== null) {
          throw new UnorderableProductError(line.index, line.productId);
        }
        throw new InsufficientStockError(
          line.index,
          { id: line.productId, sku: current.sku },
          line.quantity,
          current.stock,
        );
      }
      const unitCents = toCents(product.price);
      const lineCents = unitCents * line.quantity;
      totalCents += lineCents;
      items.push({
        id: randomUUID(),
        order_id: orderId,
        product_id: product.id,
        sku: product.sku,
        name: product.name,
        unit_price: formatCents(unitCents),
        quantity: line.quantity,
        line_total: formatCents(lineCents),
      });
    }
    const row = {
      id: orderId,
      user_id: userId,
      status: 'pending' as const,
      total_amount: formatCents(totalCents),
      currency: deps.currency,
      created_at: at,
      updated_at: at,
    };
    // The order as the database will hold it (both engines hand back these same values), so its
    // answer can be written in the same statement as its rows.
    const placed = toOrder(row, items);
    const stored = await ordersRepository.recordOrder(trx, deps.engine, row, items, respond?.(placed));
    if (!stored) throw new IdempotencyKeyInUseError();
    return placed;
  });
  await deps.products.invalidate(lines.map((line) => line.productId));
  return order;
}

function canSee(auth: AuthContext, order: OrderRow): boolean {
  return auth.role === 'admin' || order.user_id === auth.userId;
}

/** The order, to its owner or an admin; anyone else gets the same 404 as for a missing order. */
export async function getOrder(db: Queryable, auth: AuthContext, id: string): Promise<Order> {
  const row = await ordersRepository.findOrder(db, id);
  if (row === undefined || !canSee(auth, row)) throw new NotFoundError('No such order.');
  return toOrder(row, await ordersRepository.findOrderItems(db, [row.id]));
}

export async function listOrders(
  db: Queryable,
  auth: AuthContext,
  query: ListOrdersQuery,
): Promise<Page<Order>> {
  const requested = query.userId?.toLowerCase();
  if (auth.role !== 'admin' && requested !== undefined && requested !== auth.userId) {
    throw new ForbiddenError('Only admins can list other users’ orders.');
  }
  const userId = auth.role === 'admin' ? requested : auth.userId;
  const limit = pageLimit(query.limit);
  const after = query.cursor === undefined ? undefined : decodeCursor(query.cursor, ['timestamp', 'uuid']);
  const rows = await ordersRepository.listOrders(db, {
    limit,
    ...(userId === undefined ? {} : { userId }),
    ...(query.status === undefined ? {} : { status: query.status }),
    ...(after === undefined ? {} : { after: [after[0] ?? '', (after[1] ?? '').toLowerCase()] as const }),
  });
  const pageRows = rows.slice(0, limit);
  const items = await ordersRepository.findOrderItems(
    db,
    pageRows.map((row) => row.id),
  );
  const byOrder = new Map<string, OrderItemRow[]>();
  for (const item of items) {
    const list = byOrder.get(item.order_id);
    if (list === undefined) byOrder.set(item.order_id, [item]);
    else list.push(item);
  }
  return toPage(
    rows,
    limit,
    (row) => toOrder(row, byOrder.get(row.id) ?? []),
    (row) => [row.created_at, row.id],
  );
}

/**
 * Moves an order along the state machine with a conditional update; to `cancelled`, also returns
 * its stock in the same transaction (in product order) and then invalidates the cached products.
 * `ownerId` limits the move to the owner's orders (customers cancelling their own).
 */
export async function transition(
  deps: OrdersDeps,
  id: string,
  to: OrderStatus,
  ownerId?: string,
): Promise<Order> {
  const result = await deps.db.transaction().execute(async (trx) => {
    const at = new Date().toISOString();
    const row = await ordersRepository.transitionOrder(trx, {
      id,
      from: sourcesOf(to),
      to,
      at,
      ...(ownerId === undefined ? {} : { ownerId }),
    });
    if (row === undefined) {
      const current = await ordersRepository.findOrder(trx, id);
      if (current === undefined || (ownerId !== undefined && current.user_id !== ownerId)) {
        throw new NotFoundError('No such order.');
      }
      throw new InvalidTransitionError(current.status, to);
    }
    const items = await ordersRepository.findOrderItems(trx, [id]);
    if (to === 'cancelled') {
      for (const item of items) await ordersRepository.returnStock(trx, item.product_id, item.quantity, at);
    }
    return { row, items };
  });
  if (to === 'cancelled') await deps.products.invalidate(result.items.map((item) => item.product_id));
  return toOrder(result.row, result.items);
}
