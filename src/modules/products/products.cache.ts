import { createHash } from 'node:crypto';
import type { Cache, Load } from '../../infra/cache/cache.js';
import type { Representation } from '../../infra/cache/representation.js';
import type { ProductListing } from './products.service.js';

/**
 * How the catalog uses the cache. Each product is its own scope (`product:<id>`), and every list
 * page lives in one scope (`products`), keyed by a hash of its normalised query. Any change to a
 * product — admin edit, archival, or stock taken or returned by an order — invalidates that
 * product's scope and the list scope, before the response is sent.
 */
export interface ProductCache {
  /**
   * The product's representation; null (cached too) when there is no such active product. `load`
   * gets the floor its source must have replayed (read replicas), and `uncacheable` to call when
   * its source was older (Cache.aside).
   */
  product(id: string, load: Load<Representation | null>): Promise<Representation | null>;
  page(listing: ProductListing, load: Load<Representation>): Promise<Representation>;
  /** After products changed (or one was created), once committed: their entries and every list page go. */
  invalidate(productIds: readonly string[]): Promise<void>;
}

const listScope = 'products';
const productKey = (id: string) => `product:${id}`;

function listKey(listing: ProductListing): string {
  // Positional JSON: unambiguous whatever the search text contains.
  const canonical = JSON.stringify([
    listing.limit,
    listing.afterSku ?? null,
    listing.q ?? null,
    listing.minPrice ?? null,
    listing.maxPrice ?? null,
    listing.inStock ?? null,
  ]);
  return `products:${createHash('sha256').update(canonical).digest('base64url').slice(0, 32)}`;
}

export function createProductCache(
  cache: Cache,
  ttl: { readonly productSeconds: number; readonly listSeconds: number },
  /** With read replicas: the primary's WAL position, read after the write committed. */
  floor: () => Promise<string | undefined> = async () => undefined,
): ProductCache {
  const productTtlMs = ttl.productSeconds * 1000;
  const listTtlMs = ttl.listSeconds * 1000;
  return {
    product: (id, load) =>
      cache.aside(
        { cache: 'product', scope: productKey(id), key: productKey(id), ttlMs: productTtlMs },
        load,
      ),
    page: (listing, load) =>
      cache.aside({ cache: 'product_list', scope: listScope, key: listKey(listing), ttlMs: listTtlMs }, load),
    invalidate: async (productIds) => {
      const keys = productIds.map(productKey);
      const position = await floor();
      return cache.invalidate({
        scopes: [listScope, ...keys],
        keys,
        ...(position === undefined ? {} : { floor: position }),
      });
    },
  };
}
