import { api, describe, type Order, problemOf, user } from '../api.js';
import { flash, h, money, show } from '../dom.js';

function needLogin(): boolean {
  if (user()) return false;
  show(h('h1', {}, 'Orders'), h('p', {}, h('a', { href: '#/login' }, 'Log in'), ' to see your orders.'));
  return true;
}

function when(iso: string): string {
  return new Date(iso).toLocaleString();
}

export async function ordersPage(): Promise<void> {
  if (needLogin()) return;
  const { data, error, response } = await api.GET('/api/orders', { params: { query: { limit: 50 } } });
  if (!data) {
    flash(describe(problemOf(error, response)));
    return;
  }
  show(
    h('h1', {}, 'Your orders'),
    data.items.length === 0
      ? h('p', { class: 'empty' }, 'No orders yet.')
      : h(
          'table',
          { class: 'lines', id: 'orders' },
          h(
            'thead',
            {},
            h(
              'tr',
              {},
              h('th', {}, 'Order'),
              h('th', {}, 'Placed'),
              h('th', {}, 'Status'),
              h('th', {}, 'Total'),
            ),
          ),
          h(
            'tbody',
            {},
            data.items.map((o) =>
              h(
                'tr',
                { 'data-order-id': o.id },
                h('td', {}, h('a', { href: `#/orders/${o.id}` }, o.id.slice(0, 8))),
                h('td', {}, when(o.createdAt)),
                h('td', { class: `status ${o.status}` }, o.status),
                h('td', { class: 'num total' }, money(o.totalAmount, o.currency)),
              ),
            ),
          ),
        ),
  );
}

function orderView(o: Order): HTMLElement {
  const cancellable = o.status === 'pending' || o.status === 'paid';
  const cancel = h('button', { type: 'button', id: 'cancel' }, 'Cancel order');
  cancel.addEventListener('click', async () => {
    cancel.disabled = true;
    const { data, error, response } = await api.POST('/api/orders/{id}/cancel', {
      params: { path: { id: o.id } },
    });
    if (!data) {
      cancel.disabled = false;
      flash(describe(problemOf(error, response)));
      return;
    }
    flash('Order cancelled; the stock is back in the shop.', 'info');
    show(orderView(data));
  });
  return h(
    'article',
    { class: 'order', 'data-order-id': o.id },
    h('h1', {}, `Order ${o.id.slice(0, 8)}`),
    h(
      'p',
      {},
      'Status: ',
      h('strong', { class: `status ${o.status}`, id: 'order-status' }, o.status),
      ` · placed ${when(o.createdAt)}`,
    ),
    h(
      'table',
      { class: 'lines' },
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          h('th', {}, 'Product'),
          h('th', {}, 'Unit price'),
          h('th', {}, 'Quantity'),
          h('th', {}, 'Line total'),
        ),
      ),
      h(
        'tbody',
        {},
        o.items.map((i) =>
          h(
            'tr',
            {},
            h('td', {}, i.name),
            h('td', { class: 'num' }, money(i.unitPrice, o.currency)),
            h('td', { class: 'num' }, i.quantity),
            h('td', { class: 'num' }, money(i.lineTotal, o.currency)),
          ),
        ),
      ),
    ),
    h(
      'p',
      { class: 'total' },
      'Total ',
      h('strong', { id: 'order-total' }, money(o.totalAmount, o.currency)),
    ),
    cancellable ? cancel : null,
  );
}

export async function orderPage(id: string): Promise<void> {
  if (needLogin()) return;
  const { data, error, response } = await api.GET('/api/orders/{id}', { params: { path: { id } } });
  if (!data) {
    show(h('h1', {}, 'Not found'), h('p', {}, describe(problemOf(error, response))));
    return;
  }
  show(orderView(data));
}
