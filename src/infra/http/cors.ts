import type { FastifyReply, FastifyRequest } from 'fastify';

/**
 * CORS decided in one place, the app (guide correction 3): an exact allow-list of origins, credentials
 * only for those origins, never `*` together with credentials, and the `null` origin (sandboxed
 * iframes, file: pages) never allowed — configuration refuses to list it.
 */

const allowedMethods = 'GET, HEAD, POST, PATCH, DELETE';
const allowedHeaders =
  'Authorization, Content-Type, Idempotency-Key, If-None-Match, Shipshape-Read-After, X-Request-Id';
const exposedHeaders =
  'ETag, Location, Retry-After, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, X-Request-Id, Idempotent-Replayed, Shipshape-Read-After';
const preflightMaxAgeSeconds = '600';

export type CorsPolicy = (request: FastifyRequest, reply: FastifyReply) => 'preflight-answered' | undefined;

/**
 * The CORS step of the platform's request hook, or undefined when no origin is allowed. Answers an
 * approved preflight itself (a 204 with the allowed methods and headers).
 */
export function corsPolicy(origins: readonly string[]): CorsPolicy | undefined {
  if (origins.length === 0) return undefined;
  const anyOrigin = origins.length === 1 && origins[0] === '*';
  const allowed = new Set(origins);

  return (request, reply) => {
    const origin = request.headers.origin;
    if (!anyOrigin) reply.header('vary', 'Origin');
    if (origin === undefined || (!anyOrigin && !allowed.has(origin))) return undefined;

    if (anyOrigin) {
      reply.header('access-control-allow-origin', '*');
    } else {
      reply.header('access-control-allow-origin', origin);
      reply.header('access-control-allow-credentials', 'true');
    }
    reply.header('access-control-expose-headers', exposedHeaders);

    const isPreflight =
      request.method === 'OPTIONS' && request.headers['access-control-request-method'] !== undefined;
    if (!isPreflight) return undefined;
    reply
      .header('access-control-allow-methods', allowedMethods)
      .header('access-control-allow-headers', allowedHeaders)
      .header('access-control-max-age', preflightMaxAgeSeconds)
      .code(204)
      .send();
    return 'preflight-answered';
  };
}
