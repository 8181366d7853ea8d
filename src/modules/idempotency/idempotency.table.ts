import type { Insertable, Selectable } from 'kysely';
import type { CreatedAt, Timestamp } from '../../db/column-types.js';

export interface IdempotencyKeysTable {
  user_id: string;
  key: string;
  /** What the request was for (method and route), so one key cannot be replayed on another route. */
  scope: string;
  /** SHA-256 of the request body, to tell a retry from a different request under the same key. */
  request_hash: string;
  /** Null while the first request is still running. */
  response_status: number | null;
  response_body: string | null;
  created_at: CreatedAt;
  /** While the first request runs, the key is locked until then; a crashed request frees it. */
  locked_until: Timestamp;
  /** Kept at least this long (24 h by default); then a cleanup removes it. */
  expires_at: Timestamp;
}

export type IdempotencyKeyRow = Selectable<IdempotencyKeysTable>;
export type NewIdempotencyKeyRow = Insertable<IdempotencyKeysTable>;
