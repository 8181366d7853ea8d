/**
 * Security headers on every response, errors and 404s included, from two precomputed sets: one for
 * the JSON API (nothing may load or frame it), set by the platform's request hook (app.ts), and one
 * for HTML pages, set by the routes that serve HTML (static files, /docs).
 *
 * Sources: the OWASP HTTP Headers Cheat Sheet and helmet's defaults. `X-Powered-By` is never sent
 * (Fastify does not add it). HSTS is harmless over plain HTTP (browsers ignore it there) and right
 * behind a TLS-terminating proxy.
 */

/** What every response carries. */
const everywhere = {
  'strict-transport-security': 'max-age=63072000; includeSubDomains',
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'cross-origin-resource-policy': 'same-origin',
} as const;

/**
 * A JSON API has nothing to load: forbid everything, including framing. (Headers that only govern
 * documents — COOP, Permissions-Policy, DNS prefetching — go on HTML pages only: every header costs
 * every API response bytes and parsing.)
 */
export const apiContentSecurityPolicy = "default-src 'none'; frame-ancestors 'none'";

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
  ...everywhere,
  'content-security-policy': apiContentSecurityPolicy,
});

/** For HTML pages (the static site, /docs): set by the routes that serve them, over the API set. */
export const pageSecurityHeaders: Readonly<Record<string, string>> = Object.freeze({
  ...everywhere,
  'content-security-policy': pageContentSecurityPolicy,
  'cross-origin-opener-policy': 'same-origin',
  'permissions-policy': 'camera=(), microphone=(), geolocation=(), payment=()',
  'x-dns-prefetch-control': 'off',
  'x-permitted-cross-domain-policies': 'none',
});
