import { createServer } from 'node:http';
import type { FastifyInstance } from 'fastify';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import { secretsEqual } from '../lib/constant-time.js';
import { UnauthenticatedError } from '../lib/errors.js';

/**
 * The service's own Prometheus registry (never prom-client's global one, so several apps in one
 * process — the tests — do not collide). Feature modules register their metrics on it.
 */
export interface Metrics {
  readonly registry: Registry;
  readonly httpRequests: Counter<'method' | 'route' | 'status_code'>;
  readonly httpDuration: Histogram<'method' | 'route' | 'status_code'>;
  readonly httpInFlight: Gauge;
}

/** The route label of requests that matched no route: one series, not one per URL (guide correction 8). */
export const unmatchedRoute = 'unmatched';

/** `inFlight` reads the number of requests being answered (the lifecycle keeps it). */
export function createMetrics(inFlight: () => number = () => 0): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  return {
    registry,
    httpRequests: new Counter({
      name: 'http_requests_total',
      help: 'HTTP requests answered, by method, route template and status code.',
      labelNames: ['method', 'route', 'status_code'],
      registers: [registry],
    }),
    httpDuration: new Histogram({
      name: 'http_request_duration_seconds',
      help: 'Time from receiving a request to sending the whole response.',
      labelNames: ['method', 'route', 'status_code'],
      // An API answers in milliseconds: resolution where it matters, up to the 10 s that means trouble.
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    httpInFlight: new Gauge({
      name: 'http_requests_in_flight',
      help: 'Requests received and not yet answered.',
      registers: [registry],
      collect() {
        this.set(inFlight());
      },
    }),
  };
}

/** Records every request. Label children are cached: prom-client would otherwise hash labels per call. */
export function httpMetrics(app: FastifyInstance, metrics: Metrics): void {
  type Children = { count: Counter.Internal; duration: Histogram.Internal<'method'> };
  const children = new Map<string, Children>();

  app.addHook('onResponse', (request, reply, done) => {
    const route = request.is404 ? unmatchedRoute : (request.routeOptions.url ?? unmatchedRoute);
    const status = String(reply.statusCode);
    const key = `${request.method} ${route} ${status}`;
    let child = children.get(key);
    if (child === undefined) {
      const labels = { method: request.method, route, status_code: status };
      child = {
        count: metrics.httpRequests.labels(labels),
        duration: metrics.httpDuration.labels(labels) as Histogram.Internal<'method'>,
      };
      children.set(key, child);
    }
    child.count.inc();
    child.duration.observe(reply.elapsedTime / 1000);
    done();
  });
}

/** The tokens /metrics accepts: the current one and those being rotated out; none: open. */
export function acceptedMetricsTokens(config: {
  readonly token: string | undefined;
  readonly previousTokens: readonly string[];
}): readonly string[] {
  return config.token === undefined ? [] : [config.token, ...config.previousTokens];
}

/** Whether an Authorization header carries an accepted metrics token (always, when none is configured). */
export function metricsAuthorized(header: string | undefined, tokens: readonly string[]): boolean {
  if (tokens.length === 0) return true;
  const given = header?.startsWith('Bearer ') ? header.slice(7) : '';
  // Every token is compared, so the time taken does not say which one (if any) matched.
  let matched = false;
  for (const token of tokens) matched = secretsEqual(given, token) || matched;
  return matched;
}

/** GET /metrics on the main port, behind a bearer token when one is configured. */
export function metricsRoute(app: FastifyInstance, metrics: Metrics, tokens: readonly string[]): void {
  app.get('/metrics', { schema: { hide: true }, config: { rateLimit: false } }, async (request, reply) => {
    if (!metricsAuthorized(request.headers.authorization, tokens)) {
      throw new UnauthenticatedError('A valid metrics token is required.');
    }
    reply.type(metrics.registry.contentType);
    return metrics.registry.metrics();
  });
}

/**
 * /metrics on a port of its own (METRICS_PORT + worker number): under PM2 each worker is scraped
 * separately, because PM2 never runs our code in its master and prom-client cannot aggregate there.
 */
export async function startMetricsServer(
  metrics: Metrics,
  options: {
    host: string;
    port: number;
    /** Accepted bearer tokens (acceptedMetricsTokens); empty: open. */
    tokens: readonly string[];
    /** This worker's own readiness (the main port's /ready), for checks that must reach every worker. */
    ready?: () => Promise<{ status: number; body: string }>;
  },
): Promise<{ close(): Promise<void> }> {
  const server = createServer((req, res) => {
    const path = req.url?.split('?')[0];
    if (req.method === 'GET' && path === '/ready' && options.ready !== undefined) {
      options.ready().then(
        (r) => res.writeHead(r.status, { 'content-type': 'application/json' }).end(r.body),
        () => res.writeHead(503, { 'content-type': 'text/plain' }).end('Readiness unavailable\n'),
      );
      return;
    }
    if (req.method !== 'GET' || path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('Not found\n');
      return;
    }
    if (!metricsAuthorized(req.headers.authorization, options.tokens)) {
      res
        .writeHead(401, { 'content-type': 'text/plain', 'www-authenticate': 'Bearer' })
        .end('Unauthorized\n');
      return;
    }
    metrics.registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text),
      () => res.writeHead(500, { 'content-type': 'text/plain' }).end('Metrics unavailable\n'),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => resolve());
  });
  return {
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
