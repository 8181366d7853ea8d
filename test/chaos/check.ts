import pg from 'pg';
import type { OrderIntent } from './load.js';
import type { Topology } from './topology.js';

/**
 * The data check after every scenario, against the primary directly (never through a proxy):
 *
 * - every order answered 201 is in the database, exactly once;
 * - one order per idempotency key: all 201s for a key carry the same id, and every order in the
 *   database is the stored answer of exactly one key (an order no key answers with is a duplicate
 *   a retry created);
 * - stock + sold = initial, for every product;
 * - no session half-rotated: every live session has exactly one unspent refresh token and every
 *   spent one has a successor (tokens = spent + 1).
 *
 * Returns the problems found (empty: the check passed) and what it counted.
 */
export interface DataCheck {
  readonly problems: string[];
  readonly orders: number;
  readonly acknowledged: number;
  /** Intents without a definitive answer when the run gave up (not a failure by themselves). */
  readonly open: number;
  readonly sessions: number;
}

/** What the check needs of the topology: the primary, and the customers and products the load used. */
export type CheckedData = Pick<Topology, 'databaseUrl' | 'products'> & {
  readonly customers: readonly { readonly userId: string }[];
};

export async function checkData(topology: CheckedData, intents: readonly OrderIntent[]): Promise<DataCheck> {
  const problems: string[] = [];
  const userIds = topology.customers.map((c) => c.userId);
  const client = new pg.Client({ connectionString: topology.databaseUrl, connectionTimeoutMillis: 30_000 });
  // A dependency that dies under this client (the point of these scenarios) ends its socket; the
  // query in flight rejects, and the client's own 'error' event must not become an uncaught error.
  client.on('error', () => {});
  await client.connect();
  try {
    const orders = new Set(
      (
        await client.query<{ id: string }>('SELECT id FROM orders WHERE user_id = ANY($1::uuid[])', [userIds])
      ).rows.map((r) => r.id),
    );
    const acknowledged = new Map<string, string>();
    for (const intent of intents) {
      const ids = new Set(intent.acknowledged);
      if (ids.size > 1) problems.push(`key ${intent.key} answered 201 with ${ids.size} different orders`);
      for (const id of ids) {
        if (!orders.has(id)) problems.push(`order ${id} (key ${intent.key}) was acknowledged and is lost`);
        const other = acknowledged.get(id);
        if (other !== undefined && other !== intent.key)
          problems.push(`order ${id} acknowledged for two keys (${other}, ${intent.key})`);
        acknowledged.set(id, intent.key);
      }
    }

    const keys = await client.query<{ key: string; response_body: string | null }>(
      `SELECT key, response_body FROM idempotency_keys
        WHERE user_id = ANY($1::uuid[]) AND response_status = 201`,
      [userIds],
    );
    const answeredBy = new Map<string, number>();
    for (const row of keys.rows) {
      const id = (JSON.parse(row.response_body ?? '{}') as { id?: string }).id;
      if (id !== undefined) answeredBy.set(id, (answeredBy.get(id) ?? 0) + 1);
    }
    let orphans = 0;
    for (const id of orders) {
      const count = answeredBy.get(id) ?? 0;
      if (count === 0) orphans++;
      if (count > 1) problems.push(`order ${id} is the stored answer of ${count} keys`);
    }
    if (orphans > 0)
      problems.push(`${orphans} orders in the database are no key's answer (duplicates of a retry)`);
    for (const id of answeredBy.keys())
      if (!orders.has(id))
        problems.push(`a key's stored 201 names order ${id}, which is not in the database`);

    const stock = await client.query<{ id: string; stock: number; sold: string | null }>(
      `SELECT p.id, p.stock,
              (SELECT sum(oi.quantity) FROM order_items oi JOIN orders o ON o.id = oi.order_id
                WHERE oi.product_id = p.id AND o.status <> 'cancelled') AS sold
         FROM products p WHERE p.id = ANY($1::uuid[])`,
      [topology.products.map((p) => p.id)],
    );
    for (const product of topology.products) {
      const row = stock.rows.find((r) => r.id === product.id);
      const sold = Number(row?.sold ?? 0);
      if (row === undefined || row.stock + sold !== product.initialStock)
        problems.push(
          `product ${product.id}: stock ${row?.stock} + sold ${sold} ≠ initial ${product.initialStock}`,
        );
    }

    const sessions = await client.query<{ id: string; revoked: boolean; tokens: number; unspent: number }>(
      `SELECT s.id, s.revoked_at IS NOT NULL AS revoked,
              count(rt.token_hash)::int AS tokens,
              (count(rt.token_hash) FILTER (WHERE rt.spent_at IS NULL))::int AS unspent
         FROM sessions s LEFT JOIN refresh_tokens rt ON rt.session_id = s.id
        WHERE s.user_id = ANY($1::uuid[])
        GROUP BY s.id, s.revoked_at`,
      [userIds],
    );
    for (const s of sessions.rows) {
      if (s.tokens === 0) problems.push(`session ${s.id} has no refresh token (a login half made)`);
      else if (!s.revoked && s.unspent !== 1)
        problems.push(`live session ${s.id} has ${s.unspent} unspent refresh tokens (half-rotated)`);
    }

    return {
      problems,
      orders: orders.size,
      acknowledged: acknowledged.size,
      open: intents.filter((i) => !i.done).length,
      sessions: sessions.rows.length,
    };
  } finally {
    await client.end();
  }
}
