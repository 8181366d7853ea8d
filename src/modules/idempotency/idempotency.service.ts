import { createHash } from 'node:crypto';
import type { Queryable } from '../../db/database.js';
import { AppError, ErrorCode } from '../../lib/errors.js';
import type { StoredResponse } from './idempotency.repository.js';
import * as idempotencyRepository from './idempotency.repository.js';

/**
 * Idempotency keys (docs/api.md, `POST /api/orders`). A key is scoped to its user and lives in one row:
 *
 *   (none) ──begin──▶ running: no response, locked_until in the future ── repeats → 409 IN_USE
 *   running ──the work commits, with the response in the same transaction──▶ done ── repeats replay it
 *   running ──4xx──▶ done (the error is the answer, replayed too)
 *   running ──5xx──▶ (none): released, a retry starts afresh
 *   running ──process crashed, lock expired──▶ taken over by the next repeat
 *   any ──expired (≥ 24 h)──▶ removed by the cleanup, or started over by the next request
 *
 * A repeat whose body (fingerprint) or route differs from the first → 422 REUSED. `begin` runs in
 * its own short statements, before the work's transaction, so concurrent repeats see the key at once.
 */

export interface IdempotencySettings {
  readonly ttlMs: number;
  readonly lockMs: number;
}

/** The right to run the request for a key: `lockedUntil` is this holder's fencing token. */
export interface KeyHold {
  readonly userId: string;
  readonly key: string;
  readonly lockedUntil: string;
}

export type Begun =
  | { readonly kind: 'run'; readonly hold: KeyHold }
  | { readonly kind: 'replay'; readonly status: number; readonly body: string };

export class IdempotencyKeyInUseError extends AppError {
  constructor() {
    super(
      409,
      ErrorCode.IDEMPOTENCY_KEY_IN_USE,
      'A request with this Idempotency-Key is still being processed; retry shortly.',
      { headers: { 'retry-after': '1' } },
    );
  }
}

export class IdempotencyKeyReusedError extends AppError {
  constructor() {
    super(
      422,
      ErrorCode.IDEMPOTENCY_KEY_REUSED,
      'This Idempotency-Key was used for a different request; use a new key for a new request.',
      { errors: [{ path: '/headers/idempotency-key', message: 'was used with a different request' }] },
    );
  }
}

/** JSON with object keys sorted at every level: equal values give equal text. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/** SHA-256 of the canonical request: what tells a retry from a different request under one key. */
export function fingerprint(request: unknown): string {
  return createHash('sha256').update(canonicalJson(request)).digest('hex');
}

/**
 * Claims the key for this request, or says what to answer instead: the stored response (replay),
 * 422 (different request) or 409 (the first is still running).
 */
export async function begin(
  db: Queryable,
  request: { userId: string; key: string; scope: string; fingerprint: string },
  settings: IdempotencySettings,
): Promise<Begun> {
  // A few rounds at most: each lost race means another request moved the key on meanwhile.
  for (let attempt = 0; attempt < 3; attempt++) {
    const now = Date.now();
    const fresh = {
      user_id: request.userId,
      key: request.key,
      scope: request.scope,
      request_hash: request.fingerprint,
      response_status: null,
      response_body: null,
      created_at: new Date(now).toISOString(),
      locked_until: new Date(now + settings.lockMs).toISOString(),
      expires_at: new Date(now + settings.ttlMs).toISOString(),
    };
    const hold = { userId: request.userId, key: request.key, lockedUntil: fresh.locked_until };
    if (await idempotencyRepository.insertKey(db, fresh)) return { kind: 'run', hold };

    const row = await idempotencyRepository.findKey(db, request.userId, request.key);
    if (row === undefined) continue; // released or cleaned up in between: try the insert again
    if (row.expires_at <= fresh.created_at) {
      if (await idempotencyRepository.restartExpiredKey(db, fresh, row.expires_at))
        return { kind: 'run', hold };
      continue;
    }
    if (row.scope !== request.scope || row.request_hash !== request.fingerprint) {
      throw new IdempotencyKeyReusedError();
    }
    if (row.response_status !== null && row.response_body !== null) {
      return { kind: 'replay', status: row.response_status, body: row.response_body };
    }
    if (row.locked_until > fresh.created_at) throw new IdempotencyKeyInUseError();
    // The first request died without an answer (its lock ran out): this one takes over.
    if (
      await idempotencyRepository.takeOverKey(
        db,
        request.userId,
        request.key,
        row.locked_until,
        fresh.locked_until,
      )
    ) {
      return { kind: 'run', hold };
    }
  }
  throw new IdempotencyKeyInUseError();
}

/**
 * Stores the response for the key. Called inside the transaction that does the work, so the work
 * and its stored answer commit together; throws IdempotencyKeyInUseError (rolling the work back)
 * when the hold was lost to a takeover.
 */
export async function complete(
  trx: Queryable,
  hold: KeyHold,
  response: { status: number; body: string },
  settings: IdempotencySettings,
): Promise<void> {
  const expiresAt = new Date(Date.now() + settings.ttlMs).toISOString();
  if (!(await idempotencyRepository.storeResponse(trx, hold, { ...response, expiresAt }))) {
    throw new IdempotencyKeyInUseError();
  }
}

/**
 * The stored answer for `complete`, to be written by the work's own statement (the order's, on
 * PostgreSQL, in one round trip with its rows): the caller must roll the work back with
 * IdempotencyKeyInUseError when it was not stored.
 */
export function completion(
  hold: KeyHold,
  response: { status: number; body: string },
  settings: IdempotencySettings,
): StoredResponse {
  return {
    holder: hold,
    response: { ...response, expiresAt: new Date(Date.now() + settings.ttlMs).toISOString() },
  };
}

/** Gives the key up after a failure that should not be replayed (5xx): a retry starts afresh. */
export async function release(db: Queryable, hold: KeyHold): Promise<void> {
  await idempotencyRepository.deleteHeldKey(db, hold);
}

/** Deletes every expired key, in batches (short statements); returns how many. */
export async function deleteExpired(db: Queryable, now = new Date(), batchSize = 1000): Promise<number> {
  const cutoff = now.toISOString();
  let total = 0;
  for (;;) {
    const deleted = await idempotencyRepository.deleteExpiredKeys(db, cutoff, batchSize);
    total += deleted;
    if (deleted < batchSize) return total;
  }
}
