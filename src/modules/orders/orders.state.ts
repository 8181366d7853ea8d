import type { OrderStatus } from './orders.table.js';

/**
 * The order state machine (docs/api.md): pending → paid → shipped → delivered, and pending or paid →
 * cancelled (which returns the stock). Anything else is an invalid transition.
 */
const next: Readonly<Record<OrderStatus, readonly OrderStatus[]>> = {
  pending: ['paid', 'cancelled'],
  paid: ['shipped', 'cancelled'],
  shipped: ['delivered'],
  delivered: [],
  cancelled: [],
};

export function canTransition(from: OrderStatus, to: OrderStatus): boolean {
  return next[from].includes(to);
}

/** The statuses an order may be in to move to `to`: the condition of the update that moves it. */
export function sourcesOf(to: OrderStatus): OrderStatus[] {
  return (Object.keys(next) as OrderStatus[]).filter((from) => canTransition(from, to));
}
