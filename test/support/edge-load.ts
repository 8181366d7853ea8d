import { randomUUID } from 'node:crypto';
import { Agent } from 'node:https';
import { edgeRequest } from './stack.js';

/**
 * Closed-loop keep-alive clients through the stack's HTTPS edge, reading a product and placing
 * orders with idempotency keys (three GETs, then one POST), each client from its own loopback
 * address with its own account. Every outcome is kept with its request id (to find it in nginx's
 * access log) and, for POSTs, its idempotency key and body (to retry it afterwards).
 * test/support/load.ts speaks plain HTTP to one port; this one needs TLS, a CA and source addresses.
 */

export interface EdgeClient {
  readonly localAddress: string;
  readonly accessToken: string;
}

export interface Outcome {
  readonly method: 'GET' | 'POST';
  readonly requestId: string;
  /** ms since the load started, when the answer (or error) came. */
  readonly at: number;
  /** How long the client waited for it, ms. */
  readonly ms: number;
  readonly status: number | null;
  readonly error?: string;
  readonly client: number;
  readonly idempotencyKey?: string;
  readonly orderId?: string;
}

export const failed = (o: Outcome) => o.status === null || o.status >= 500;

export function orderBody(productId: string): string {
  return JSON.stringify({ items: [{ productId, quantity: 1 }] });
}

export function startEdgeLoad(options: {
  baseUrl: string;
  ca: string;
  clients: readonly EdgeClient[];
  productId: string;
  tag: string;
}) {
  const started = Date.now();
  const outcomes: Outcome[] = [];
  let stopping = false;
  const loop = async (index: number, client: EdgeClient) => {
    const agent = new Agent({
      keepAlive: true,
      maxSockets: 1,
      ca: options.ca,
      localAddress: client.localAddress,
    });
    for (let i = 0; !stopping; i++) {
      const post = i % 4 === 3;
      const requestId = `${options.tag}-${index}-${i}`;
      const key = post ? `${options.tag}-${index}-${randomUUID()}` : undefined;
      const headers: Record<string, string> = { 'x-request-id': requestId };
      const sent = Date.now();
      if (post) {
        headers.authorization = `Bearer ${client.accessToken}`;
        headers['idempotency-key'] = key as string;
      }
      try {
        const res = await edgeRequest(
          post ? `${options.baseUrl}/api/orders` : `${options.baseUrl}/api/products/${options.productId}`,
          {
            method: post ? 'POST' : 'GET',
            headers,
            ...(post ? { body: orderBody(options.productId) } : {}),
            agent,
            ca: options.ca,
          },
        );
        outcomes.push({
          method: post ? 'POST' : 'GET',
          requestId,
          at: Date.now() - started,
          ms: Date.now() - sent,
          status: res.status,
          client: index,
          ...(key === undefined ? {} : { idempotencyKey: key }),
          ...(post && res.status === 201 ? { orderId: JSON.parse(res.body).id as string } : {}),
        });
      } catch (err) {
        outcomes.push({
          method: post ? 'POST' : 'GET',
          requestId,
          at: Date.now() - started,
          ms: Date.now() - sent,
          status: null,
          error: (err as NodeJS.ErrnoException).code ?? (err as Error).message,
          client: index,
          ...(key === undefined ? {} : { idempotencyKey: key }),
        });
      }
    }
    agent.destroy();
  };
  const running = options.clients.map((c, i) => loop(i, c));
  return {
    /** ms since start. */
    now: () => Date.now() - started,
    count: () => outcomes.length,
    outcomes: () => outcomes as readonly Outcome[],
    async stop(): Promise<readonly Outcome[]> {
      stopping = true;
      await Promise.all(running);
      return outcomes;
    },
  };
}
