import type { Generated, Insertable, Selectable, Updateable } from 'kysely';
import type { CreatedAt, NullableTimestamp, UpdatedAt } from '../../db/column-types.js';

export const userRoles = ['customer', 'admin'] as const;
export type UserRole = (typeof userRoles)[number];

export interface UsersTable {
  id: string;
  /** Stored lower-cased; unique through an index on lower(email). */
  email: string;
  username: string;
  password_hash: string;
  role: Generated<UserRole>;
  created_at: CreatedAt;
  updated_at: UpdatedAt;
  last_login_at: NullableTimestamp;
  /** Users are deactivated, never deleted, so their orders survive (guide correction 17). */
  deactivated_at: NullableTimestamp;
  /** Set when the current email was confirmed through a mailed link; a new email clears it. */
  email_verified_at: NullableTimestamp;
}

export type UserRow = Selectable<UsersTable>;
export type NewUserRow = Insertable<UsersTable>;
export type UserUpdate = Updateable<UsersTable>;
