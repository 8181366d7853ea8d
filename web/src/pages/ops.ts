import { api, describe, type Product, problemOf, user } from '../api.js';
import { field, flash, h, money, show } from '../dom.js';

type Snapshot = NonNullable<Awaited<ReturnType<typeof fetchSnapshot>>>;

async function fetchSnapshot() {
  const { data } = await api.GET('/api/ops/metrics');
  return data;
}

const svgNs = 'http://www.w3.org/2000/svg';
const width = 240;
const height = 56;
const keep = 60;

/** A labelled sparkline: the last minute or so of one figure, redrawn on every snapshot. */
function chart(id: string, title: string, format: (v: number) => string) {
  const values: number[] = [];
  const svg = document.createElementNS(svgNs, 'svg');
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', title);
  const line = document.createElementNS(svgNs, 'polyline');
  line.setAttribute('class', 'line');
  svg.append(line);
  const current = h('output', { class: 'value', 'data-chart-value': id }, '–');
  const box = h(
    'figure',
    { class: 'chart', id: `chart-${id}`, 'data-points': 0 },
    h('figcaption', {}, title, ' ', current),
    svg,
  );
  return {
    box,
    push(value: number) {
      values.push(Number.isFinite(value) ? value : 0);
      if (values.length > keep) values.shift();
      const top = Math.max(...values, 1e-9);
      line.setAttribute(
        'points',
        values
          .map(
            (v, i) =>
              `${((i / Math.max(1, values.length - 1)) * width).toFixed(1)},${(height - 2 - (v / top) * (height - 4)).toFixed(1)}`,
          )
          .join(' '),
      );
      current.textContent = format(value);
      box.dataset.points = String(values.length);
      box.dataset.last = String(value);
    },
  };
}

/** The p-quantile from the difference of two cumulative histograms (upper bound of its bucket). */
function quantile(prev: Snapshot, next: Snapshot, q: number): number {
  const before = new Map(prev.requests.durationBuckets.map((b) => [b.le, b.count]));
  const deltas = next.requests.durationBuckets.map((b) => ({
    le: b.le,
    count: b.count - (before.get(b.le) ?? 0),
  }));
  const total = deltas.at(-1)?.count ?? 0;
  if (total <= 0) return 0;
  const bucket = deltas.find((b) => b.count >= q * total);
  return bucket && bucket.le < 1e9 ? bucket.le : (deltas.at(-2)?.le ?? 0);
}

let timer: number | undefined;

/** Stops the refresh loop when the page is left. */
export function leaveOps(): void {
  if (timer !== undefined) clearInterval(timer);
  timer = undefined;
}

export async function opsPage(): Promise<void> {
  if (user()?.role !== 'admin') {
    show(
      h('h1', {}, 'Operations'),
      h('p', {}, 'Only administrators can see this page. ', h('a', { href: '#/login' }, 'Log in')),
    );
    return;
  }
  const pct = (v: number) => `${(v * 100).toFixed(1)}%`;
  const charts = {
    rate: chart('rate', 'Requests/s', (v) => v.toFixed(1)),
    errors: chart('errors', 'Error ratio (5xx)', pct),
    p95: chart('p95', 'p95 latency', (v) => `${(v * 1000).toFixed(1)} ms`),
    inflight: chart('inflight', 'In flight', (v) => v.toFixed(0)),
    cache: chart('cache', 'Cache hit ratio', pct),
    loop: chart('loop', 'Event-loop utilisation', pct),
    pool: chart('pool', 'Pool in use', (v) => v.toFixed(0)),
  };
  const instance = h('dl', { class: 'instance', id: 'instance' });
  const orders = h('tbody', { id: 'recent-orders' });
  const products = h('tbody', { id: 'admin-products' });
  show(
    h('h1', {}, 'Operations'),
    h(
      'section',
      { class: 'charts', 'aria-label': 'Live figures' },
      Object.values(charts).map((c) => c.box),
    ),
    h('h2', {}, 'Instance'),
    instance,
    h('h2', {}, 'Recent orders'),
    h(
      'table',
      { class: 'lines' },
      h(
        'thead',
        {},
        h('tr', {}, h('th', {}, 'Order'), h('th', {}, 'Status'), h('th', {}, 'Total'), h('th', {}, 'Placed')),
      ),
      orders,
    ),
    h('h2', {}, 'Catalog'),
    productForm(),
    h(
      'table',
      { class: 'lines' },
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          h('th', {}, 'SKU'),
          h('th', {}, 'Name'),
          h('th', {}, 'Price'),
          h('th', {}, 'Stock'),
          h('th', {}, ''),
        ),
      ),
      products,
    ),
  );

  let previous = await fetchSnapshot();
  const tick = async () => {
    const next = await fetchSnapshot();
    if (!next || !previous) {
      previous = next;
      return;
    }
    const seconds = Math.max(0.001, (Date.parse(next.takenAt) - Date.parse(previous.takenAt)) / 1000);
    const requests = next.requests.total - previous.requests.total;
    const hits = next.cache.hits - previous.cache.hits;
    const lookups = hits + next.cache.misses - previous.cache.misses;
    charts.rate.push(requests / seconds);
    charts.errors.push(
      requests > 0 ? (next.requests.serverErrors - previous.requests.serverErrors) / requests : 0,
    );
    charts.p95.push(quantile(previous, next, 0.95));
    charts.inflight.push(next.requests.inFlight);
    charts.cache.push(lookups > 0 ? hits / lookups : 0);
    charts.loop.push(next.eventLoop.utilization);
    charts.pool.push(next.pool.inUse);
    const ready = await fetch('/ready').then(
      (r) => r.json() as Promise<{ status: string; checks: Record<string, string> }>,
    );
    instance.replaceChildren(
      ...[
        ['Status', ready.status],
        ...Object.entries(ready.checks).map(([k, v]) => [k, v]),
        ['Worker', `#${next.instance.appInstance} (pid ${next.instance.pid})`],
        ['Build', `${next.instance.version} ${next.instance.commit}`],
        ['Node', next.instance.nodeVersion],
        ['Up', `${Math.round(next.instance.uptimeSeconds)} s`],
      ].flatMap(([k, v]) => [h('dt', {}, k), h('dd', { 'data-check': k }, v)]),
    );
    previous = next;
  };
  leaveOps();
  timer = window.setInterval(() => void tick(), 2000);
  await Promise.all([tick(), loadOrders(orders), loadProducts(products)]);
}

async function loadOrders(body: HTMLElement): Promise<void> {
  const { data } = await api.GET('/api/orders', { params: { query: { limit: 10 } } });
  body.replaceChildren(
    ...(data?.items ?? []).map((o) =>
      h(
        'tr',
        {},
        h('td', {}, o.id.slice(0, 8)),
        h('td', { class: `status ${o.status}` }, o.status),
        h('td', { class: 'num' }, money(o.totalAmount, o.currency)),
        h('td', {}, new Date(o.createdAt).toLocaleString()),
      ),
    ),
  );
}

async function loadProducts(body: HTMLElement): Promise<void> {
  const { data } = await api.GET('/api/products', { params: { query: { limit: 50 } } });
  body.replaceChildren(...(data?.items ?? []).map((p) => productRow(p, body)));
}

function productRow(p: Product, body: HTMLElement): HTMLElement {
  const price = h('input', {
    value: p.price,
    inputmode: 'decimal',
    size: 8,
    'aria-label': `Price of ${p.sku}`,
  });
  const stock = h('input', {
    value: p.stock,
    type: 'number',
    min: 0,
    size: 6,
    'aria-label': `Stock of ${p.sku}`,
  });
  const save = h('button', { type: 'button' }, 'Save');
  const archive = h('button', { type: 'button', class: 'link' }, 'Archive');
  save.addEventListener('click', async () => {
    const { data, error, response } = await api.PATCH('/api/products/{id}', {
      params: { path: { id: p.id } },
      body: { price: price.value.trim(), stock: Number(stock.value) },
    });
    flash(
      data
        ? `Saved ${data.sku}: ${data.price} ${data.currency}, ${data.stock} in stock.`
        : describe(problemOf(error, response)),
      data ? 'info' : 'error',
    );
  });
  archive.addEventListener('click', async () => {
    const { error, response } = await api.DELETE('/api/products/{id}', { params: { path: { id: p.id } } });
    if (response.ok) {
      flash(`Archived ${p.sku}.`, 'info');
      await loadProducts(body);
    } else flash(describe(problemOf(error, response)));
  });
  return h(
    'tr',
    { 'data-sku': p.sku },
    h('td', {}, p.sku),
    h('td', {}, p.name),
    h('td', {}, price),
    h('td', {}, stock),
    h('td', {}, save, ' ', archive),
  );
}

function productForm(): HTMLElement {
  const sku = h('input', { name: 'sku', required: true, size: 10 });
  const name = h('input', { name: 'name', required: true });
  const price = h('input', { name: 'price', required: true, inputmode: 'decimal', size: 8 });
  const stock = h('input', { name: 'stock', type: 'number', min: 0, value: 0, size: 6 });
  return h(
    'form',
    {
      class: 'filters',
      id: 'new-product',
      onsubmit: async (event: Event) => {
        event.preventDefault();
        const { data, error, response } = await api.POST('/api/products', {
          body: {
            sku: sku.value.trim(),
            name: name.value.trim(),
            price: price.value.trim(),
            stock: Number(stock.value),
          },
        });
        if (!data) {
          flash(describe(problemOf(error, response)));
          return;
        }
        flash(`Created ${data.sku}.`, 'info');
        const body = document.getElementById('admin-products');
        if (body) await loadProducts(body);
      },
    },
    field('SKU', sku),
    field('Name', name),
    field('Price', price),
    field('Stock', stock),
    h('button', { type: 'submit' }, 'Add product'),
  );
}
