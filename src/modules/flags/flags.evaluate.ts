import { createHash } from 'node:crypto';
import type { FlagState } from './flags.definitions.js';

export type FlagReason = 'disabled' | 'allow_list' | 'rollout';

export interface FlagDecision {
  readonly enabled: boolean;
  readonly reason: FlagReason;
}

/** Buckets a percentage is counted in: 0.01 % each. */
const buckets = 10_000;

/**
 * The user's bucket for a flag, 0–9999: the first 32 bits of SHA-256(flag, user) modulo 10,000.
 * The same on every server and after every restart (no seed, no process state), different for each
 * flag (a user in the first 10 % of one flag is not in the first 10 % of every flag), and stable as
 * a percentage grows: raising 10 % to 20 % only adds users.
 */
export function rolloutBucket(flag: string, userId: string): number {
  return createHash('sha256').update(flag).update('\0').update(userId).digest().readUInt32BE(0) % buckets;
}

/** Whether the flag is on for this caller (anonymous callers: only at 100 %). */
export function decide(flag: string, state: FlagState, userId: string | undefined): FlagDecision {
  if (!state.enabled) return { enabled: false, reason: 'disabled' };
  if (userId !== undefined && state.allowUsers.includes(userId))
    return { enabled: true, reason: 'allow_list' };
  if (state.percentage >= 100) return { enabled: true, reason: 'rollout' };
  if (userId === undefined || state.percentage <= 0) return { enabled: false, reason: 'rollout' };
  return { enabled: rolloutBucket(flag, userId) < state.percentage * (buckets / 100), reason: 'rollout' };
}
