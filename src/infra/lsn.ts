/**
 * PostgreSQL WAL positions (`pg_lsn`, printed as `X/Y`: two 32-bit hex halves). In the service they
 * travel as 16 hex digits, zero-padded, so that comparing two as strings compares the positions —
 * in JavaScript, in Redis scripts and in cache stamps alike.
 */
export type LsnKey = string;

const keyPattern = /^[0-9a-f]{16}$/;

/** `X/Y` → its 16-digit key; undefined for anything else (NULL from a primary, garbage). */
export function lsnKeyOf(pgLsn: string | null | undefined): LsnKey | undefined {
  if (typeof pgLsn !== 'string') return undefined;
  const match = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(pgLsn);
  if (match === null) return undefined;
  return `${(match[1] ?? '').padStart(8, '0')}${(match[2] ?? '').padStart(8, '0')}`.toLowerCase();
}

export function isLsnKey(value: string): value is LsnKey {
  return keyPattern.test(value);
}

/** The later of two positions (undefined counts as "no requirement"). */
export function laterLsn(a: LsnKey | undefined, b: LsnKey | undefined): LsnKey | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return a >= b ? a : b;
}

/**
 * A position no server reaches (the largest `pg_lsn`): "read from the primary". Handed out when the
 * position of a write could not be read; it sorts after every real position, so it wins wherever
 * the later requirement is kept (`laterLsn`, the per-user key in Redis).
 */
export const primaryOnlyLsn: LsnKey = 'ffffffffffffffff';

/**
 * Bytes between two positions (`to` − `from`), never negative: a distance, for lag. It cannot tell
 * "caught up" from "ahead"; a replica ahead of its primary is on another timeline, and the health
 * check compares the positions themselves for that (replica-health.ts).
 */
export function lsnDistance(from: LsnKey, to: LsnKey): number {
  const diff = BigInt(`0x${to}`) - BigInt(`0x${from}`);
  return diff > 0n ? Number(diff) : 0;
}
