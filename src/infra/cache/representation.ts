import { createHash } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';

/**
 * A response body serialised once, with its strong ETag: what the product routes cache. A cache hit
 * sends the stored bytes as they are — no query, no serialisation — and answers a matching
 * `If-None-Match` with 304.
 */
export interface Representation {
  readonly body: string;
  readonly etag: string;
}

export function representationOf(body: string): Representation {
  return { body, etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 32)}"` };
}

/** If-None-Match uses the weak comparison (RFC 9110 §13.1.2): a `W/` prefix does not matter. */
export function matchesIfNoneMatch(header: string | undefined, etag: string): boolean {
  if (header === undefined) return false;
  for (const candidate of header.split(',')) {
    const tag = candidate.trim();
    if (tag === '*' || tag === etag || (tag.startsWith('W/') && tag.slice(2) === etag)) return true;
  }
  return false;
}

export const jsonContentType = 'application/json; charset=utf-8';

/** 200 with the stored bytes, or 304 when the client already has them; either way with the ETag. */
export function sendRepresentation(
  request: FastifyRequest,
  reply: FastifyReply,
  representation: Representation,
): FastifyReply {
  // no-cache: clients may keep a copy but must revalidate it (cheaply, with If-None-Match).
  reply.header('etag', representation.etag).header('cache-control', 'no-cache');
  if (matchesIfNoneMatch(request.headers['if-none-match'], representation.etag)) {
    return reply.code(304).send();
  }
  return reply.type(jsonContentType).send(representation.body);
}

/**
 * Serialises a value with the route's response schema for `status` — the same allow-list Fastify
 * applies to objects — for bodies that are stored (cache entries, idempotent responses) and sent as
 * they are.
 */
export function serializeWithSchema(reply: FastifyReply, status: number, value: object): string {
  const serialize = reply.getSerializationFunction(String(status));
  if (serialize === undefined) throw new Error(`route ${reply.request.url} has no ${status} response schema`);
  return serialize(value as Record<string, unknown>);
}
