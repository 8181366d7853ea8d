// The cart lives in localStorage (it survives a reload and needs no account). Checkout keeps one
// Idempotency-Key per cart content in sessionStorage: a double click, a retry after a timeout, or
// a reload mid-checkout all send the same key, so the API creates one order.
export interface CartLine {
  productId: string;
  name: string;
  price: string;
  currency: string;
  quantity: number;
}

const key = 'shipshape.cart';
const changed = new Set<() => void>();

export function lines(): CartLine[] {
  try {
    const parsed = JSON.parse(localStorage.getItem(key) ?? '[]') as CartLine[];
    return Array.isArray(parsed) ? parsed : [];
  } catch {
    return [];
  }
}

function save(next: CartLine[]): void {
  localStorage.setItem(key, JSON.stringify(next));
  for (const listener of changed) listener();
}

export function onCartChange(listener: () => void): void {
  changed.add(listener);
}

export function add(line: Omit<CartLine, 'quantity'>, quantity: number): void {
  const current = lines();
  const existing = current.find((l) => l.productId === line.productId);
  if (existing) existing.quantity += quantity;
  else current.push({ ...line, quantity });
  save(current);
}

export function setQuantity(productId: string, quantity: number): void {
  save(
    lines()
      .map((l) => (l.productId === productId ? { ...l, quantity } : l))
      .filter((l) => l.quantity > 0),
  );
}

export function clear(): void {
  save([]);
  sessionStorage.removeItem(`${key}.checkout`);
}

export function count(): number {
  return lines().reduce((n, l) => n + l.quantity, 0);
}

/** Cents, so the displayed total never suffers float rounding. */
export function total(): string {
  const cents = lines().reduce((sum, l) => sum + Math.round(Number(l.price) * 100) * l.quantity, 0);
  return (cents / 100).toFixed(2);
}

/** The key for this cart's checkout: the same while the cart is unchanged, a new one after. */
export function checkoutKey(): string {
  const content = JSON.stringify(lines().map((l) => [l.productId, l.quantity]));
  const stored = JSON.parse(sessionStorage.getItem(`${key}.checkout`) ?? 'null') as {
    content: string;
    key: string;
  } | null;
  if (stored && stored.content === content) return stored.key;
  const fresh = crypto.randomUUID();
  sessionStorage.setItem(`${key}.checkout`, JSON.stringify({ content, key: fresh }));
  return fresh;
}
