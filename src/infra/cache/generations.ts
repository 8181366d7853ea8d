import { randomBytes } from 'node:crypto';

/**
 * Generation tokens: unique across processes (a random prefix per process) and cheap to make (a
 * counter), so a lookup can offer one for a generation that does not exist yet without drawing
 * random bytes. Tokens never contain ':' or a newline, which frame stamps and entries.
 */
export function createTokenSource(): () => string {
  const prefix = randomBytes(6).toString('base64url');
  let counter = 0;
  return () => {
    counter += 1;
    return `${prefix}${counter.toString(36)}`;
  };
}
