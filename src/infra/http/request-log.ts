import { type FastifyReply, type FastifyRequest, LogController } from 'fastify';

/** Routes polled by load balancers and Prometheus: logged at debug, or they would drown the rest. */
const probeRoutes = new Set(['/health', '/ready', '/metrics']);

/**
 * One JSON line per request, written when the response has been sent: method, route template,
 * path, status, duration, client address, request id (as `requestId`, bound by Fastify) and user id when known.
 * Slow requests are logged at warn. Never headers or bodies, so no secret can leak through here.
 */
export class RequestLogController extends LogController {
  constructor(private readonly slowRequestMs: number) {
    super({ requestIdLogLabel: 'requestId' });
  }

  override incomingRequest(): void {}

  override routeNotFound(): void {}

  override requestCompleted(
    error: Error | null | undefined,
    request: FastifyRequest,
    reply: FastifyReply,
  ): void {
    const route = request.routeOptions.url;
    const durationMs = Math.round(reply.elapsedTime * 100) / 100;
    const line = {
      method: request.method,
      route: route ?? null,
      path: request.url.split('?', 1)[0],
      status: reply.statusCode,
      durationMs,
      // The client's address: the peer, or X-Forwarded-For when the peer is in TRUST_PROXY.
      clientIp: request.ip,
      userId: request.auth?.userId,
      ...(error ? { err: error } : {}),
    };
    if (error) {
      reply.log.error(line, 'request failed');
    } else if (durationMs >= this.slowRequestMs) {
      reply.log.warn({ ...line, slow: true, thresholdMs: this.slowRequestMs }, 'slow request');
    } else if (route !== undefined && probeRoutes.has(route)) {
      reply.log.debug(line, 'request completed');
    } else {
      reply.log.info(line, 'request completed');
    }
  }
}
