import type { Kysely } from 'kysely';
import type { Database, Engine } from './database.js';
import { blockingPendingMigrations } from './migrator.js';

/** Every table the code queries; the compiler checks that none of Database's tables is missing. */
const requiredTables = [
  'users',
  'sessions',
  'refresh_tokens',
  'products',
  'orders',
  'order_items',
  'idempotency_keys',
  'feature_flags',
  'account_tokens',
  'jobs',
] as const satisfies readonly (keyof Database)[];
const everyTable: Exclude<keyof Database, (typeof requiredTables)[number]> extends never ? true : never =
  true;
void everyTable;

/**
 * Why the schema cannot serve this code, or undefined when it can: migrations the code has that the
 * database has not applied (unmigrated, or behind after a deploy or a `db:migrate --down`), or
 * tables the code needs that are gone (dropped by hand, a half-applied manual repair).
 */
export async function schemaProblem(db: Kysely<Database>, engine: Engine): Promise<string | undefined> {
  const pending = await blockingPendingMigrations(db, engine);
  if (pending.length > 0)
    return `schema behind: pending migrations (${pending.join(', ')}); run \`npm run db:migrate\``;
  const present = new Set((await db.introspection.getTables()).map((t) => t.name));
  const missing = requiredTables.filter((table) => !present.has(table));
  if (missing.length > 0)
    return `schema incomplete: missing tables (${missing.join(', ')}) although every migration is recorded`;
  return undefined;
}

/**
 * schemaProblem() for /ready, which load balancers poll: a current schema is checked again at most
 * every `maxAgeMs`, one check at a time. A check that fails (database down) is not remembered: the
 * database probe reports that.
 */
export function createSchemaMonitor(
  db: Kysely<Database>,
  engine: Engine,
  maxAgeMs = 5000,
): { problem(): Promise<string | undefined> } {
  let last: { at: number; problem: string | undefined } | undefined;
  let running: Promise<string | undefined> | undefined;
  return {
    problem() {
      if (last !== undefined && Date.now() - last.at < maxAgeMs) return Promise.resolve(last.problem);
      running ??= schemaProblem(db, engine)
        .then((problem) => {
          // Only a good verdict is remembered: a schema that was behind is checked again at the
          // next poll, so /ready turns 200 as soon as `db:migrate` has run.
          last = problem === undefined ? { at: Date.now(), problem } : undefined;
          return problem;
        })
        .finally(() => {
          running = undefined;
        });
      return running;
    },
  };
}
