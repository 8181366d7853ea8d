import type { Insertable, Selectable } from 'kysely';
import type { Timestamp } from '../../db/column-types.js';

/** A run-time override of a flag defined in code (flags.definitions.ts). */
export interface FeatureFlagsTable {
  key: string;
  /** JSON of a FlagState: portable (one text column on both engines), validated when read. */
  state: string;
  updated_at: Timestamp;
  updated_by: string | null;
}

export type FeatureFlagRow = Selectable<FeatureFlagsTable>;
export type NewFeatureFlagRow = Insertable<FeatureFlagsTable>;
