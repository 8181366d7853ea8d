import type { Insertable, Selectable } from 'kysely';
import type { CreatedAt, NullableTimestamp, Timestamp } from '../../db/column-types.js';

/** One login: the family every rotated refresh token of that login belongs to. */
export interface SessionsTable {
  id: string;
  user_id: string;
  created_at: CreatedAt;
  last_used_at: Timestamp;
  /** Absolute end of the session, whatever the activity. */
  expires_at: Timestamp;
  revoked_at: NullableTimestamp;
  revoked_reason: string | null;
  user_agent: string | null;
  ip: string | null;
}

/** Refresh tokens, stored only as SHA-256 hashes. A spent token presented again revokes its session. */
export interface RefreshTokensTable {
  token_hash: string;
  session_id: string;
  created_at: CreatedAt;
  /** Idle expiry: a token unused until then is dead. */
  expires_at: Timestamp;
  spent_at: NullableTimestamp;
}

export type SessionRow = Selectable<SessionsTable>;
export type NewSessionRow = Insertable<SessionsTable>;
export type RefreshTokenRow = Selectable<RefreshTokensTable>;
export type NewRefreshTokenRow = Insertable<RefreshTokensTable>;
