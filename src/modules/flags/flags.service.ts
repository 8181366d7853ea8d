import type { Logger } from 'pino';
import { Counter, type Registry } from 'prom-client';
import type { Db } from '../../db/database.js';
import type { Cache } from '../../infra/cache/cache.js';
import {
  type FlagDefinition,
  type FlagKey,
  type FlagState,
  flagDefinitions,
  flagKeys,
} from './flags.definitions.js';
import { decide, type FlagReason } from './flags.evaluate.js';
import * as flagsRepository from './flags.repository.js';
import type { FeatureFlagRow } from './flags.table.js';

/**
 * Feature flags (decision 0056): defined in code with a default (flags.definitions.ts), overridden
 * at run time by a row in `feature_flags`, written through the admin API.
 *
 * Every evaluation reads an in-process snapshot of the overrides, at most `snapshotMs` old, so a
 * flag costs a Map lookup and one SHA-256 per request. The snapshot is refreshed through the cache
 * (one entry for all overrides) with its invalidation: a change invalidates the entry, and with
 * Redis every process and server sees it at its next refresh; without Redis each process's
 * in-memory entry lives `localEntryMs`, and SQLite's external-write check invalidates it for
 * other processes on the same file. Either way a change is seen everywhere within a second.
 *
 * The store unreachable (the database down, or slower than `waitMs`): the coded defaults, never an
 * error — a flag must not turn an outage of the store into an outage of the feature's route.
 */

export type FlagSource = 'code' | 'override' | 'fallback';

export interface FlagOverride extends FlagState {
  readonly updatedAt: string;
  readonly updatedBy: string | null;
}

export interface FlagView {
  readonly key: FlagKey;
  readonly description: string;
  readonly default: FlagState;
  readonly override: FlagOverride | null;
}

export interface FlagEvaluation {
  readonly enabled: boolean;
  readonly reason: FlagReason;
  readonly source: FlagSource;
}

export interface FeatureFlags {
  /** Whether the flag is on for the caller; never throws. */
  enabled(key: FlagKey, caller: { readonly userId?: string | undefined }): Promise<boolean>;
  evaluate(key: FlagKey, caller: { readonly userId?: string | undefined }): Promise<FlagEvaluation>;
  /** Every flag with its default and override, read from the database (admin API). */
  list(db: Db): Promise<FlagView[]>;
  /** Stores an override, invalidates every process's copy; returns the flag before and after. */
  set(db: Db, key: FlagKey, state: FlagState, by: string): Promise<{ before: FlagView; after: FlagView }>;
  /** Removes the override (back to the coded default). */
  clear(db: Db, key: FlagKey): Promise<{ before: FlagView; after: FlagView }>;
}

export interface FeatureFlagOptions {
  readonly db: Db;
  readonly cache: Cache;
  readonly registry: Registry;
  readonly logger: Logger;
  /** Longest an evaluation trusts the in-process snapshot. */
  readonly snapshotMs?: number;
  /** Lifetime of the cached overrides when the cache is per process (memory). */
  readonly localEntryMs?: number;
  /** Longest an evaluation waits for a refresh before it decides on what it has. */
  readonly waitMs?: number;
  readonly now?: () => number;
}

const scope = 'feature-flags';
const entryKey = 'feature-flags:overrides';
const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** An override as stored; undefined when the row is not a valid state (it is then ignored). */
export function parseState(json: string): FlagState | undefined {
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null) return undefined;
  const { enabled, percentage, allowUsers } = value as Record<string, unknown>;
  if (typeof enabled !== 'boolean') return undefined;
  if (typeof percentage !== 'number' || !Number.isInteger(percentage) || percentage < 0 || percentage > 100)
    return undefined;
  if (!Array.isArray(allowUsers) || !allowUsers.every((id) => typeof id === 'string' && uuid.test(id)))
    return undefined;
  return { enabled, percentage, allowUsers: allowUsers.map((id: string) => id.toLowerCase()) };
}

type Overrides = Readonly<Record<string, FlagOverride>>;

/** A stored row as an override; undefined when its state is not valid. */
function overrideOf(row: FeatureFlagRow): FlagOverride | undefined {
  const state = parseState(row.state);
  return state === undefined ? undefined : { ...state, updatedAt: row.updated_at, updatedBy: row.updated_by };
}

export function createFeatureFlags(options: FeatureFlagOptions): FeatureFlags {
  const { cache, logger } = options;
  const snapshotMs = options.snapshotMs ?? 250;
  const waitMs = options.waitMs ?? 250;
  const now = options.now ?? Date.now;
  // Shared by every process with Redis: invalidation does the work, the TTL only bounds a miss.
  const entryTtlMs = cache.kind === 'redis' ? 60_000 : (options.localEntryMs ?? 500);
  const evaluations = new Counter({
    name: 'feature_flag_evaluations_total',
    help: 'Feature-flag evaluations by flag, result (on, off), reason (disabled, allow_list, rollout) and source (code: the coded default; override: a stored override; fallback: the store was unreachable, so the coded default).',
    labelNames: ['flag', 'result', 'reason', 'source'],
    registers: [options.registry],
  });
  const counted = new Map<string, Counter.Internal>();
  const count = (key: FlagKey, evaluation: FlagEvaluation) => {
    const id = `${key}\n${evaluation.enabled}\n${evaluation.reason}\n${evaluation.source}`;
    let child = counted.get(id);
    if (child === undefined) {
      child = evaluations.labels({
        flag: key,
        result: evaluation.enabled ? 'on' : 'off',
        reason: evaluation.reason,
        source: evaluation.source,
      });
      counted.set(id, child);
    }
    child.inc();
  };

  let snapshot: { overrides: Overrides; at: number } | undefined;
  // When the last refresh failed: evaluations use the coded defaults until one succeeds.
  let failedAt: number | undefined;
  let refreshing: Promise<void> | undefined;
  let outage = false;
  // Bumped by this process's own changes: a refresh that began before one must not store its result.
  let generation = 0;

  async function loadOverrides(): Promise<Overrides> {
    const rows = await flagsRepository.listOverrides(options.db);
    const overrides: Record<string, FlagOverride> = {};
    for (const row of rows) {
      const override = overrideOf(row);
      if (override === undefined) {
        logger.warn({ flag: row.key }, 'ignoring a feature-flag override that is not a valid state');
        continue;
      }
      overrides[row.key] = override;
    }
    return overrides;
  }

  function refresh(): Promise<void> {
    if (refreshing !== undefined) return refreshing;
    const started = generation;
    const running: Promise<void> = (async () => {
      try {
        const overrides = await cache.aside(
          { cache: 'feature_flags', scope, key: entryKey, ttlMs: entryTtlMs },
          () => loadOverrides(),
        );
        if (started === generation) snapshot = { overrides, at: now() };
        failedAt = undefined;
        if (outage) logger.info({ event: 'feature_flags_store_back' }, 'feature-flag store reachable again');
        outage = false;
      } catch (err) {
        failedAt = now();
        if (!outage)
          logger.warn(
            { err, event: 'feature_flags_store_unavailable' },
            'feature-flag store unreachable; using the coded defaults',
          );
        outage = true;
      }
    })();
    refreshing = running;
    running.finally(() => {
      if (refreshing === running) refreshing = undefined;
    });
    return running;
  }

  /** The overrides to decide with; undefined: the store is unreachable (coded defaults). */
  async function current(): Promise<Overrides | undefined> {
    const t = now();
    const fresh = snapshot !== undefined && t - snapshot.at < snapshotMs;
    const retryDue = failedAt === undefined || t - failedAt >= snapshotMs;
    if (!fresh && retryDue) {
      let timer: NodeJS.Timeout | undefined;
      const waited = await Promise.race([
        refresh().then(() => true),
        new Promise<false>((resolve) => {
          timer = setTimeout(() => resolve(false), waitMs);
        }),
      ]);
      clearTimeout(timer);
      // Still loading after waitMs: decide on what we have; the refresh carries on for the next caller.
      if (!waited && failedAt === undefined) return snapshot?.overrides;
    }
    return failedAt === undefined ? snapshot?.overrides : undefined;
  }

  async function evaluate(
    key: FlagKey,
    caller: { readonly userId?: string | undefined },
  ): Promise<FlagEvaluation> {
    const definition: FlagDefinition = flagDefinitions[key];
    const overrides = await current();
    const override = overrides?.[key];
    const source: FlagSource =
      overrides === undefined ? 'fallback' : override === undefined ? 'code' : 'override';
    const userId = caller.userId?.toLowerCase();
    const decision = decide(key, override ?? definition.default, userId);
    const evaluation = { ...decision, source };
    count(key, evaluation);
    return evaluation;
  }

  const view = (key: FlagKey, override: FlagOverride | undefined): FlagView => ({
    key,
    description: flagDefinitions[key].description,
    default: flagDefinitions[key].default,
    override: override ?? null,
  });

  async function viewOf(db: Db, key: FlagKey): Promise<FlagView> {
    const row = await flagsRepository.findOverride(db, key);
    return view(key, row === undefined ? undefined : overrideOf(row));
  }

  async function changed(): Promise<void> {
    await cache.invalidate({ scopes: [scope], keys: [entryKey] });
    // This process sees its own change at once.
    generation += 1;
    snapshot = undefined;
    refreshing = undefined;
  }

  return {
    evaluate,
    async enabled(key, caller) {
      return (await evaluate(key, caller)).enabled;
    },
    async list(db) {
      const rows = await flagsRepository.listOverrides(db);
      const byKey = new Map(rows.map((row) => [row.key, row]));
      return flagKeys.map((key) => {
        const row = byKey.get(key);
        return view(key, row === undefined ? undefined : overrideOf(row));
      });
    },
    async set(db, key, state, by) {
      const before = await viewOf(db, key);
      const normalised: FlagState = {
        enabled: state.enabled,
        percentage: state.percentage,
        allowUsers: [...new Set(state.allowUsers.map((id) => id.toLowerCase()))],
      };
      await flagsRepository.upsertOverride(db, {
        key,
        state: JSON.stringify(normalised),
        updated_at: new Date(now()).toISOString(),
        updated_by: by,
      });
      await changed();
      return { before, after: await viewOf(db, key) };
    },
    async clear(db, key) {
      const before = await viewOf(db, key);
      await flagsRepository.deleteOverride(db, key);
      await changed();
      return { before, after: await viewOf(db, key) };
    },
  };
}
