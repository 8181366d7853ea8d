import { randomUUID } from 'node:crypto';
import { Agent, request } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Customer, Product } from './topology.js';

/**
 * The chaos load: closed-loop clients mixing catalog reads, logins, refresh-token rotations and
 * orders. Orders carry an Idempotency-Key and are retried with the same key and body on a 5xx, a
 * timeout, a connection error or 409 IDEMPOTENCY_KEY_IN_USE — as a careful client would — so every
 * order intent ends with a definitive answer or is still open when the run gives up. Every attempt
 * is kept (Jepsen-style: what was acknowledged is what the data check holds the database to).
 */

export type Op = 'catalog' | 'product' | 'login' | 'refresh' | 'order';

export type Kind =
  | 'ok'
  /** A 4xx the operation may get (other than 409 in use and 429). */
  | 'rejected'
  | 'in_use'
  | '429'
  /** 503 with Retry-After: the service's promised answer when a dependency cannot serve. */
  | '503'
  /** 503 without Retry-After (nginx's own, or a bug). */
  | '503-bare'
  | '500'
  | '502'
  | '504'
  | 'timeout'
  | 'conn';

export interface Attempt {
  readonly op: Op;
  /** ms epoch. */
  readonly start: number;
  readonly end: number;
  readonly kind: Kind;
  readonly status: number | null;
  readonly detail?: string;
}

export interface OrderIntent {
  readonly key: string;
  readonly customer: number;
  readonly productId: string;
  /** Every order id a 201 carried for this key (all equal, or a key made two orders). */
  readonly acknowledged: string[];
  /** A definitive answer came (201 or a 4xx the client accepts). */
  done: boolean;
  attempts: number;
}

export const failureKinds: readonly Kind[] = ['503', '503-bare', '500', '502', '504', 'timeout', 'conn'];

export interface ChaosLoad {
  readonly attempts: Attempt[];
  readonly intents: OrderIntent[];
  /** Stops starting new operations; open order intents keep retrying until `drainMs` has passed. */
  stop(drainMs: number): Promise<void>;
}

interface Reply {
  status: number;
  body: string;
  headers: Record<string, string | string[] | undefined>;
}

function call(
  port: number,
  agent: Agent,
  method: 'GET' | 'POST',
  path: string,
  timeoutMs: number,
  headers: Record<string, string> = {},
  body?: unknown,
): Promise<Reply> {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        method,
        path,
        agent,
        headers: {
          ...(payload === undefined
            ? {}
            : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }),
          ...headers,
        },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c) => {
          text += c;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text, headers: res.headers }));
        res.on('error', reject);
      },
    );
    // The whole exchange, not just socket idleness: a trickling answer is a hang too.
    const timer = setTimeout(
      () => req.destroy(Object.assign(new Error('timeout'), { code: 'TIMEOUT' })),
      timeoutMs,
    );
    req.on('close', () => clearTimeout(timer));
    req.on('error', reject);
    req.end(payload);
  });
}

function kindOf(reply: Reply): Kind {
  const { status } = reply;
  if (status < 400) return 'ok';
  if (status === 429) return '429';
  if (status === 409 && reply.body.includes('IDEMPOTENCY_KEY_IN_USE')) return 'in_use';
  if (status < 500) return 'rejected';
  if (status === 503) return reply.headers['retry-after'] === undefined ? '503-bare' : '503';
  if (status === 502 || status === 504) return status === 502 ? '502' : '504';
  return '500';
}

const retryable = new Set<Kind>(['in_use', '503', '503-bare', '500', '502', '504', 'timeout', 'conn', '429']);

export function startChaosLoad(options: {
  port: number;
  customers: Customer[];
  products: readonly Product[];
  clients: number;
  /** A client gives up on one attempt after this long and counts it as a timeout (a hang). */
  attemptTimeoutMs: number;
}): ChaosLoad {
  const attempts: Attempt[] = [];
  const intents: OrderIntent[] = [];
  let stopping = false;
  let drainUntil = Number.POSITIVE_INFINITY;

  const attempt = async (
    agent: Agent,
    op: Op,
    method: 'GET' | 'POST',
    path: string,
    headers?: Record<string, string>,
    body?: unknown,
  ): Promise<{ kind: Kind; reply?: Reply }> => {
    const start = Date.now();
    try {
      const reply = await call(options.port, agent, method, path, options.attemptTimeoutMs, headers, body);
      const kind = kindOf(reply);
      attempts.push({
        op,
        start,
        end: Date.now(),
        kind,
        status: reply.status,
        ...(kind === 'ok' ? {} : { detail: reply.body.slice(0, 160) }),
      });
      return { kind, reply };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      const kind: Kind = code === 'TIMEOUT' ? 'timeout' : 'conn';
      attempts.push({ op, start, end: Date.now(), kind, status: null, detail: code });
      return { kind };
    }
  };

  const placeOrder = async (agent: Agent, index: number, customer: Customer, product: Product) => {
    const intent: OrderIntent = {
      key: randomUUID(),
      customer: index,
      productId: product.id,
      acknowledged: [],
      done: false,
      attempts: 0,
    };
    intents.push(intent);
    const body = { items: [{ productId: product.id, quantity: 1 }] };
    for (;;) {
      intent.attempts++;
      const { kind, reply } = await attempt(
        agent,
        'order',
        'POST',
        '/api/orders',
        { authorization: `Bearer ${customer.accessToken}`, 'idempotency-key': intent.key },
        body,
      );
      if (kind === 'ok' && reply !== undefined) {
        intent.acknowledged.push((JSON.parse(reply.body) as { id: string }).id);
        intent.done = true;
        return;
      }
      if (!retryable.has(kind)) {
        intent.done = true;
        return;
      }
      if (Date.now() > drainUntil) return;
      const after = Number(reply?.headers['retry-after']);
      await sleep(
        Number.isFinite(after) && after > 0
          ? Math.min(after * 1000, 2000)
          : Math.min(100 * intent.attempts, 1000),
      );
    }
  };

  const client = async (index: number) => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const customer = options.customers[index % options.customers.length] as Customer;
    let needsLogin = false;
    // Every third client only browses: a client waiting for its order is not reading the catalog,
    // and "reads continue while writes cannot" needs readers that are not stuck in a retry.
    const browser = index % 3 === 2;
    for (let i = 0; !stopping; i++) {
      const product = options.products[(index + i) % options.products.length] as Product;
      const roll = browser ? 0.4 + Math.random() * 0.6 : Math.random();
      if (!browser && (needsLogin || roll < 0.05)) {
        const { reply } = await attempt(
          agent,
          'login',
          'POST',
          '/api/auth/login',
          {},
          {
            login: customer.login,
            password: customer.password,
          },
        );
        if (reply?.status === 200) {
          const tokens = JSON.parse(reply.body) as { accessToken: string; refreshToken: string };
          customer.accessToken = tokens.accessToken;
          customer.refreshToken = tokens.refreshToken;
          needsLogin = false;
        }
      } else if (roll < 0.1) {
        // A refresh whose answer was lost leaves the client with a spent token: it logs in again
        // rather than replaying it (a replayed spent token revokes the session by design).
        const { kind, reply } = await attempt(
          agent,
          'refresh',
          'POST',
          '/api/auth/refresh',
          {},
          {
            refreshToken: customer.refreshToken,
          },
        );
        if (reply?.status === 200) {
          const tokens = JSON.parse(reply.body) as { accessToken: string; refreshToken: string };
          customer.accessToken = tokens.accessToken;
          customer.refreshToken = tokens.refreshToken;
        } else if (kind !== '429') {
          needsLogin = true;
        }
      } else if (roll < 0.4) {
        await placeOrder(agent, index, customer, product);
      } else if (roll < 0.7) {
        await attempt(agent, 'catalog', 'GET', '/api/products?limit=20');
      } else {
        await attempt(agent, 'product', 'GET', `/api/products/${product.id}`);
      }
    }
    agent.destroy();
  };

  // Two clients per customer at most: each customer's tokens are shared by its clients.
  const running = Array.from({ length: options.clients }, (_, i) => client(i));
  return {
    attempts,
    intents,
    async stop(drainMs) {
      drainUntil = Date.now() + drainMs;
      stopping = true;
      await Promise.all(running);
    },
  };
}
