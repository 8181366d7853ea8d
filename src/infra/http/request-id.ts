import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';

/** A caller's id is kept only when it is a short token that cannot forge log lines or headers. */
const saneRequestId = /^[A-Za-z0-9._:-]{1,128}$/;

export const requestIdHeader = 'x-request-id';

/** Fastify's genReqId: the caller's `x-request-id` when it is sane, else a new UUID. */
export function requestIdFor(req: IncomingMessage): string {
  const given = req.headers[requestIdHeader];
  return typeof given === 'string' && saneRequestId.test(given) ? given : randomUUID();
}
