import { existsSync } from 'node:fs';
import fastifyStatic from '@fastify/static';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { pageSecurityHeaders } from './http/security-headers.js';

/** A name like `app.3f9a1c2b.js`: the content hash changes with the content, so it never goes stale. */
const contentHashed = /\.[0-9a-f]{8,}\.[a-z0-9]+$/i;

/** The guide's caching policy, made precise: HTML is always revalidated; hashed assets are immutable. */
export function cacheControlFor(path: string): string {
  if (path.endsWith('.html')) return 'no-cache';
  if (contentHashed.test(path)) return 'public, max-age=31536000, immutable';
  return 'public, max-age=86400';
}

/**
 * Serves the public directory. One route per file (no wildcard), so an unknown path is a plain 404
 * and the metrics route label stays bounded. ETag and Last-Modified come from @fastify/static.
 */
export async function staticFiles(app: FastifyInstance, root: string): Promise<void> {
  if (!existsSync(root)) {
    app.log.warn({ root }, 'static directory not found; serving no static files');
    return;
  }
  await app.register(fastifyStatic, {
    root,
    wildcard: false,
    index: ['index.html'],
    etag: true,
    lastModified: true,
    cacheControl: false,
    setHeaders: (reply: FastifyReply, path: string) => {
      reply.header('cache-control', cacheControlFor(path));
      if (path.endsWith('.html')) reply.headers(pageSecurityHeaders);
    },
  });
}
