import { isUtf8 } from 'node:buffer';
import type { FastifyInstance } from 'fastify';
import { type FieldError, ValidationError } from '../../lib/errors.js';

/**
 * Text the databases can store, checked once at the edge for every request (docs/decisions/0010).
 *
 * PostgreSQL cannot store U+0000 in `text` (the driver's error became a 500), SQLite can — the
 * engines disagreed. A lone surrogate is not Unicode at all: encoding it to UTF-8 silently turns
 * it into U+FFFD on either engine, so what was stored is not what the client sent. Both are
 * refused with 400 VALIDATION_FAILED naming the field, before the route's schema is even looked
 * at, for every string in the path parameters, the query, the headers and the JSON body (keys
 * included), and a JSON body whose bytes are not UTF-8 is refused rather than decoded with
 * U+FFFD in place of the bad bytes. Other control characters are stored faithfully by both engines and are left to the
 * fields' own rules.
 */

// ES2024 (Node 20+); the project's lib is ES2023.
declare global {
  interface String {
    isWellFormed(): boolean;
  }
}

/** Why a string cannot be stored as sent, or undefined when it can. */
export function unstorableReason(text: string): string | undefined {
  if (text.includes('\u0000')) return 'must not contain U+0000 (NUL)';
  if (!text.isWellFormed()) return 'must not contain a lone surrogate (not valid Unicode)';
  return undefined;
}

/** A JSON-pointer segment, with characters that cannot be shown written as JSON escapes. */
function segment(key: string): string {
  const escaped = key.replaceAll('~', '~0').replaceAll('/', '~1');
  return unstorableReason(escaped) === undefined ? escaped : JSON.stringify(escaped).slice(1, -1);
}

/**
 * The first string (or property name) in `value` that cannot be stored, as a field error whose
 * path starts at `root`. Iterative, so a deeply nested body cannot overflow the stack.
 */
export function findUnstorable(value: unknown, root: string): FieldError | undefined {
  const stack: Array<[unknown, string]> = [[value, root]];
  while (stack.length > 0) {
    const [current, path] = stack.pop() as [unknown, string];
    if (typeof current === 'string') {
      const reason = unstorableReason(current);
      if (reason !== undefined) return { path, message: reason };
    } else if (Array.isArray(current)) {
      for (let i = current.length - 1; i >= 0; i--) stack.push([current[i], `${path}/${i}`]);
    } else if (typeof current === 'object' && current !== null) {
      const entries = Object.entries(current);
      for (let i = entries.length - 1; i >= 0; i--) {
        const [key, child] = entries[i] as [string, unknown];
        const reason = unstorableReason(key);
        if (reason !== undefined)
          return { path: `${path}/${segment(key)}`, message: `property name ${reason}` };
        stack.push([child, `${path}/${segment(key)}`]);
      }
    }
  }
  return undefined;
}

/**
 * Registers the check for every route. It runs in preValidation: after the body is parsed and the
 * route matched (params decoded), before schema validation, authentication and the handler.
 * Paths are named like schema errors: /params/id, /querystring/q, /headers/user-agent, /body/login.
 */
export function storableText(app: FastifyInstance): void {
  // Fastify's own JSON parser (same proto/constructor poisoning rules), after a UTF-8 check on the
  // raw bytes: decoding would silently replace invalid sequences with U+FFFD.
  const { onProtoPoisoning = 'error', onConstructorPoisoning = 'error' } = app.initialConfig;
  const parseJson = app.getDefaultJsonParser(onProtoPoisoning, onConstructorPoisoning);
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (request, body, done) => {
    const bytes = body as Buffer;
    if (!isUtf8(bytes)) {
      done(
        new ValidationError('The request body is not valid UTF-8.', [
          { path: '/body', message: 'must be valid UTF-8' },
        ]),
        undefined,
      );
      return;
    }
    parseJson(request, bytes.toString('utf8'), done);
  });
  app.addHook('preValidation', (request, _reply, done) => {
    const problem =
      findUnstorable(request.params, '/params') ??
      findUnstorable(request.query, '/querystring') ??
      findUnstorable(request.headers, '/headers') ??
      findUnstorable(request.body, '/body');
    if (problem === undefined) return done();
    done(new ValidationError('The request contains text that cannot be stored.', [problem]));
  });
}
