import { Type } from 'typebox';
import { ValidationError } from './errors.js';

/**
 * Keyset pagination. A cursor is the sort key of the last item of a page, base64url-encoded JSON
 * (opaque to clients). Anything that does not decode to the expected shape — forged, truncated, from
 * another list — is a 400, never a 500. Keyset pages stay stable under inserts, unlike offsets.
 */

export const pageQueryProperties = {
  limit: Type.Integer({ minimum: 1, maximum: 100, default: 20, description: 'Items per page (1–100).' }),
  cursor: Type.Optional(
    Type.String({
      minLength: 1,
      maxLength: 512,
      description: 'Opaque cursor from the previous page’s nextCursor.',
    }),
  ),
};

export function pageSchema<T extends ReturnType<typeof Type.Object>>(item: T) {
  return Type.Object(
    { items: Type.Array(item), nextCursor: Type.Union([Type.String(), Type.Null()]) },
    { additionalProperties: false },
  );
}

export interface Page<T> {
  items: T[];
  nextCursor: string | null;
}

/** What a cursor may hold: each position is validated against its kind. */
export type CursorPart = 'timestamp' | 'uuid' | 'text';

const checks: Record<CursorPart, (value: unknown) => boolean> = {
  // A real moment, written exactly as we write them: Date.parse accepts 30 February (it rolls over)
  // and year 0, which PostgreSQL refuses with a 500 (security probe 2026-12-02, finding 5).
  timestamp: (v) =>
    typeof v === 'string' &&
    /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/.test(v) &&
    !v.startsWith('0000') &&
    !Number.isNaN(Date.parse(v)) &&
    new Date(v).toISOString() === v,
  uuid: (v) =>
    typeof v === 'string' && /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(v),
  text: (v) => typeof v === 'string' && v.length <= 256,
};

export function encodeCursor(values: readonly string[]): string {
  return Buffer.from(JSON.stringify(values)).toString('base64url');
}

export function decodeCursor(cursor: string, parts: readonly CursorPart[]): string[] {
  let values: unknown;
  try {
    values = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    values = undefined;
  }
  if (
    !Array.isArray(values) ||
    values.length !== parts.length ||
    !parts.every((part, i) => checks[part](values[i]))
  ) {
    throw new ValidationError('The cursor is not valid for this list.', [
      { path: '/querystring/cursor', message: 'is not a valid cursor' },
    ]);
  }
  return values as string[];
}

/** Builds a page from up to limit+1 rows: the extra row only says whether there is a next page. */
export function toPage<Row, Item>(
  rows: readonly Row[],
  limit: number,
  toItem: (row: Row) => Item,
  cursorOf: (row: Row) => readonly string[],
): Page<Item> {
  const pageRows = rows.slice(0, limit);
  const last = pageRows.at(-1);
  return {
    items: pageRows.map(toItem),
    nextCursor: rows.length > limit && last !== undefined ? encodeCursor(cursorOf(last)) : null,
  };
}
