import { Counter, type Registry } from 'prom-client';

export type OrderFailureReason =
  | 'insufficient_stock'
  | 'unorderable_product'
  | 'unit_limit'
  | 'invalid_request'
  | 'idempotency_key_in_use'
  | 'idempotency_key_reused'
  | 'error';

export interface OrderMetrics {
  readonly created: Counter;
  readonly failed: Counter<'reason'>;
  readonly replayed: Counter;
}

export function createOrderMetrics(registry: Registry): OrderMetrics {
  return {
    created: new Counter({
      name: 'orders_created_total',
      help: 'Orders created (replays of an idempotent request are not counted again).',
      registers: [registry],
    }),
    failed: new Counter({
      name: 'orders_failed_total',
      help: 'Order creations refused or failed, by reason.',
      labelNames: ['reason'],
      registers: [registry],
    }),
    replayed: new Counter({
      name: 'orders_idempotent_replays_total',
      help: 'POST /api/orders answered from a stored response (same Idempotency-Key, same body).',
      registers: [registry],
    }),
  };
}
