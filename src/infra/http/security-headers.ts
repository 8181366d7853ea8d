import type { FastifyInstance } from 'fastify';

/**
 * Security headers on every response, errors and 404s included. Set from two precomputed header
 * sets rather than a middleware that rebuilds them per request: one for the JSON API (nothing may
 * load or frame it) and one for HTML pages (the static site and /docs).
 *
 * Sources: the OWASP HTTP Headers Cheat Sheet and helmet's defaults. `X-Powered-By` is never sent
 * (Fastify does not add it). HSTS is harmless over plain HTTP (browsers ignore it there) and right
 * behind a TLS-terminating proxy.
 */

const common = {
  'strict-transport-security': 'max-age=63072000; includeSubDomains',
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
  'x-dns-prefetch-control': 'off',
  'x-permitted-cross-domain-policies': 'none',
  'permissions-policy': 'camera=(), microphone=(), geolocation=(), payment=()',
} as const;

/** A JSON API has nothing to load: forbid everything, including framing. */
export const apiContentSecurityPolicy =
  "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/** Our own pages load only our own scripts and styles (Swagger UI needs inline styles and data: images). */
export const pageContentSecurityPolicy = [
  "default-src 'self'",
  "base-uri 'self'",
  "object-src 'none'",
  "script-src 'self'",
  "script-src-attr 'none'",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data:",
  "font-src 'self'",
  "connect-src 'self'",
  "frame-ancestors 'none'",
  "form-action 'self'",
].join('; ');

export const apiSecurityHeaders: Readonly<Record<string, string>> = Object.freeze({
  ...common,
  'content-security-policy': apiContentSecurityPolicy,
});

export function securityHeaders(app: FastifyInstance): void {
  app.addHook('onRequest', (_request, reply, done) => {
    reply.headers(apiSecurityHeaders);
    done();
  });
  app.addHook('onSend', (_request, reply, payload, done) => {
    const type = reply.getHeader('content-type');
    if (typeof type === 'string' && type.startsWith('text/html')) {
      reply.header('content-security-policy', pageContentSecurityPolicy);
    }
    done(null, payload);
  });
}
