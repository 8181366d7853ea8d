import { api, describe, type Product, problemOf, user } from '../api.js';
import * as cart from '../cart.js';
import { field, flash, h, money, show } from '../dom.js';

type Filters = { q?: string; minPrice?: string; maxPrice?: string; inStock?: boolean };

function productCard(p: Product): HTMLElement {
  return h(
    'li',
    { class: 'card', 'data-product-id': p.id },
    h('a', { href: `#/product/${p.id}`, class: 'name' }, p.name),
    h('span', { class: 'price' }, money(p.price, p.currency)),
    h(
      'span',
      { class: p.stock > 0 ? 'stock' : 'stock out' },
      p.stock > 0 ? `${p.stock} in stock` : 'Out of stock',
    ),
  );
}

export async function catalogPage(params: URLSearchParams): Promise<void> {
  const filters: Filters = {
    q: params.get('q') ?? undefined,
    minPrice: params.get('minPrice') ?? undefined,
    maxPrice: params.get('maxPrice') ?? undefined,
    inStock: params.get('inStock') === 'true' || undefined,
  };
  const q = h('input', { name: 'q', type: 'search', value: filters.q ?? '', placeholder: 'Name or SKU' });
  const min = h('input', { name: 'minPrice', inputmode: 'decimal', value: filters.minPrice ?? '', size: 6 });
  const max = h('input', { name: 'maxPrice', inputmode: 'decimal', value: filters.maxPrice ?? '', size: 6 });
  const inStock = h('input', { name: 'inStock', type: 'checkbox', checked: filters.inStock === true });
  const form = h(
    'form',
    {
      class: 'filters',
      role: 'search',
      onsubmit: (event: Event) => {
        event.preventDefault();
        const next = new URLSearchParams();
        if (q.value.trim()) next.set('q', q.value.trim());
        if (min.value.trim()) next.set('minPrice', min.value.trim());
        if (max.value.trim()) next.set('maxPrice', max.value.trim());
        if (inStock.checked) next.set('inStock', 'true');
        location.hash = `#/?${next}`;
      },
    },
    field('Search', q),
    field('Min price', min),
    field('Max price', max),
    h('label', { class: 'check' }, inStock, h('span', {}, 'In stock only')),
    h('button', { type: 'submit' }, 'Search'),
  );
  const list = h('ul', { class: 'grid', id: 'products' });
  const more = h('button', { type: 'button', class: 'more', hidden: true }, 'More products');
  show(h('h1', {}, 'Catalog'), form, list, more);

  let cursor: string | undefined;
  const load = async () => {
    const { data, error, response } = await api.GET('/api/products', {
      params: { query: { limit: 24, ...filters, ...(cursor ? { cursor } : {}) } },
    });
    if (!data) {
      flash(describe(problemOf(error, response)));
      return;
    }
    list.append(...data.items.map(productCard));
    if (list.childElementCount === 0) list.append(h('li', { class: 'empty' }, 'No products match.'));
    cursor = data.nextCursor ?? undefined;
    more.hidden = !cursor;
  };
  more.addEventListener('click', () => void load());
  await load();
}

export async function productPage(id: string): Promise<void> {
  const { data: p, error, response } = await api.GET('/api/products/{id}', { params: { path: { id } } });
  if (!p) {
    show(h('h1', {}, 'Not found'), h('p', {}, describe(problemOf(error, response))));
    return;
  }
  const quantity = h('input', { name: 'quantity', type: 'number', min: 1, max: 1000, value: 1 });
  const addButton = h('button', { type: 'submit', disabled: p.stock === 0 }, 'Add to cart');
  show(
    h(
      'article',
      { class: 'product', 'data-product-id': p.id },
      h('h1', {}, p.name),
      h('p', { class: 'sku' }, `SKU ${p.sku}`),
      h('p', { class: 'price', id: 'price' }, money(p.price, p.currency)),
      h(
        'p',
        { class: p.stock > 0 ? 'stock' : 'stock out' },
        p.stock > 0 ? `${p.stock} in stock` : 'Out of stock',
      ),
      p.description ? h('p', { class: 'description' }, p.description) : null,
      h(
        'form',
        {
          onsubmit: (event: Event) => {
            event.preventDefault();
            const n = Math.max(1, Math.min(1000, Math.floor(Number(quantity.value) || 1)));
            cart.add({ productId: p.id, name: p.name, price: p.price, currency: p.currency }, n);
            flash(`Added ${n} × ${p.name} to your cart.`, 'info');
          },
        },
        field('Quantity', quantity),
        addButton,
      ),
    ),
  );
}

export function cartPage(): void {
  const lines = cart.lines();
  if (lines.length === 0) {
    show(
      h('h1', {}, 'Cart'),
      h('p', { class: 'empty' }, 'Your cart is empty.'),
      h('a', { href: '#/' }, 'Browse the catalog'),
    );
    return;
  }
  const currency = lines[0]?.currency ?? '';
  const rows = lines.map((l) => {
    const qty = h('input', {
      type: 'number',
      min: 0,
      max: 1000,
      value: l.quantity,
      'aria-label': `Quantity of ${l.name}`,
      onchange: (event: Event) => {
        cart.setQuantity(
          l.productId,
          Math.max(0, Math.floor(Number((event.target as HTMLInputElement).value) || 0)),
        );
        cartPage();
      },
    });
    return h(
      'tr',
      { 'data-product-id': l.productId },
      h('td', {}, h('a', { href: `#/product/${l.productId}` }, l.name)),
      h('td', { class: 'num' }, money(l.price, l.currency)),
      h('td', {}, qty),
      h(
        'td',
        {},
        h(
          'button',
          {
            type: 'button',
            class: 'link',
            onclick: () => {
              cart.setQuantity(l.productId, 0);
              cartPage();
            },
          },
          'Remove',
        ),
      ),
    );
  });
  const checkout = h('button', { type: 'button', id: 'checkout', class: 'primary' }, 'Place order');
  checkout.addEventListener('click', () => void placeOrder(checkout));
  show(
    h('h1', {}, 'Cart'),
    h(
      'table',
      { class: 'lines' },
      h(
        'thead',
        {},
        h('tr', {}, h('th', {}, 'Product'), h('th', {}, 'Price'), h('th', {}, 'Quantity'), h('th', {}, '')),
      ),
      h('tbody', {}, rows),
    ),
    h('p', { class: 'total' }, 'Total ', h('strong', { id: 'cart-total' }, money(cart.total(), currency))),
    user()
      ? checkout
      : h(
          'p',
          {},
          h('a', { href: '#/login?next=cart' }, 'Log in'),
          ' or ',
          h('a', { href: '#/register?next=cart' }, 'register'),
          ' to check out.',
        ),
  );
}

let placing = false;

async function placeOrder(button: HTMLButtonElement): Promise<void> {
  // A second click while the first is in flight does nothing; a retry reuses the same key anyway.
  if (placing) return;
  placing = true;
  button.disabled = true;
  try {
    const items = cart.lines().map((l) => ({ productId: l.productId, quantity: l.quantity }));
    const { data, error, response } = await api.POST('/api/orders', {
      body: { items },
      headers: { 'idempotency-key': cart.checkoutKey() },
    });
    if (!data) {
      flash(describe(problemOf(error, response)));
      return;
    }
    cart.clear();
    flash(`Order placed: ${data.totalAmount} ${data.currency}.`, 'info');
    location.hash = `#/orders/${data.id}`;
  } finally {
    placing = false;
    button.disabled = false;
  }
}
