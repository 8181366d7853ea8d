import { isIPv6 } from 'node:net';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { AppError, ErrorCode } from '../../lib/errors.js';
import type { CounterStore, WindowCount } from './counter-store.js';

export interface RateLimitRule {
  /** Counters are kept per rule name, so routes sharing a name share a budget. */
  readonly name: string;
  readonly max: number;
  readonly windowMs: number;
  /**
   * Hits a process may count before Redis has them (decision 0105): the shared budget is exceeded
   * by at most (processes × this) per client and window. 0 or absent: every hit reaches Redis first.
   */
  readonly localAllowance?: number;
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Overrides the scope's rate limit for one route; `false` exempts it. */
    rateLimit?: RateLimitRule | false;
  }
}

/**
 * The part of a client address that identifies one client: the whole IPv4 address, or the /64
 * prefix of an IPv6 one (a single host can use its whole /64). IPv4-mapped IPv6 becomes IPv4.
 */
export function clientKey(ip: string): string {
  // Cheap tests first: this runs on every request, and isIPv6() is a large regular expression.
  if (!ip.includes(':')) return ip;
  if (ip.startsWith('::ffff:') && ip.includes('.')) return ip.slice(7);
  if (!isIPv6(ip)) return ip;
  const [head = '', tail = ''] = ip.split('::');
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = tail === '' ? [] : tail.split(':');
  const groups = ip.includes('::')
    ? [...headGroups, ...Array(8 - headGroups.length - tailGroups.length).fill('0'), ...tailGroups]
    : headGroups;
  return `${groups
    .slice(0, 4)
    .map((g) => g.toLowerCase().replace(/^0+(?=.)/, ''))
    .join(':')}::/64`;
}

/**
 * Per-client-IP fixed-window rate limiting for every route of the scope it is registered in.
 * The client IP is `request.ip`, which Fastify takes from X-Forwarded-For only when the peer is a
 * configured trusted proxy (guide correction 5). Headers follow the IETF RateLimit draft.
 */
export function rateLimit(app: FastifyInstance, store: CounterStore, defaultRule: RateLimitRule): void {
  // A callback hook, not an async one: with the in-process store the whole check is synchronous.
  app.addHook('onRequest', (request, reply, done) => {
    const rule = request.routeOptions.config.rateLimit ?? defaultRule;
    if (rule === false) return done();
    const counted = store.increment(
      `rl:${rule.name}:${clientKey(request.ip)}`,
      rule.windowMs,
      rule.localAllowance ?? 0,
    );
    if (counted instanceof Promise) {
      counted.then((window) => done(verdict(reply, rule, window)), done);
    } else {
      done(verdict(reply, rule, counted));
    }
  });
}

/** Sets the RateLimit headers; returns the 429 to answer with when the client is over the limit. */
function verdict(
  reply: FastifyReply,
  rule: RateLimitRule,
  { count, resetInMs }: WindowCount,
): AppError | undefined {
  const resetSeconds = Math.max(1, Math.ceil(resetInMs / 1000));
  reply.header('ratelimit-limit', rule.max);
  reply.header('ratelimit-remaining', Math.max(0, rule.max - count));
  reply.header('ratelimit-reset', resetSeconds);
  if (count <= rule.max) return undefined;
  return new AppError(429, ErrorCode.RATE_LIMITED, `Too many requests; retry in ${resetSeconds} s.`, {
    headers: { 'retry-after': String(resetSeconds) },
  });
}
