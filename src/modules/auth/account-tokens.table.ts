import type { Insertable, Selectable } from 'kysely';
import type { CreatedAt, NullableTimestamp, Timestamp } from '../../db/column-types.js';

export const accountTokenPurposes = ['password_reset', 'verify_email'] as const;
export type AccountTokenPurpose = (typeof accountTokenPurposes)[number];

/** Single-use tokens mailed for a password reset or an email verification; stored only as hashes. */
export interface AccountTokensTable {
  id: string;
  token_hash: string;
  user_id: string;
  purpose: AccountTokenPurpose;
  email: string;
  created_at: CreatedAt;
  expires_at: Timestamp;
  used_at: NullableTimestamp;
}

export type AccountTokenRow = Selectable<AccountTokensTable>;
export type NewAccountTokenRow = Insertable<AccountTokensTable>;
