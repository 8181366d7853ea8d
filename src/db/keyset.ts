import { type Expression, type SqlBool, sql } from 'kysely';

/**
 * The rows after a cursor in a newest-first list ordered by (created_at DESC, id DESC): older, or
 * as old with a smaller id. Parameterised, and the same SQL on both engines.
 */
export function olderThan([createdAt, id]: readonly [createdAt: string, id: string]): Expression<SqlBool> {
  return sql<SqlBool>`(created_at < ${createdAt} or (created_at = ${createdAt} and id < ${id}))`;
}
