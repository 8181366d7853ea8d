import { sql } from 'kysely';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { Db } from '../db/database.js';

/**
 * The connection budget: every process of every app server may open up to its pool size, and all of
 * them together, plus the connections kept for everything else, must fit in what PostgreSQL allows
 * non-superusers (`max_connections − superuser_reserved_connections`). Past that, the last
 * connections are refused with "too many clients" under exactly the load where they are needed.
 */

export interface BudgetLayout {
  readonly poolMax: number;
  readonly workersPerServer: number;
  readonly servers: number;
  readonly reserved: number;
}

export interface BudgetServer {
  readonly maxConnections: number;
  readonly superuserReserved: number;
}

export interface Budget {
  readonly needed: number;
  readonly available: number;
  readonly fits: boolean;
  /** One line with every number, for the start-up log and the refusal. */
  readonly summary: string;
}

export function connectionBudget(layout: BudgetLayout, server: BudgetServer): Budget {
  const app = layout.poolMax * layout.workersPerServer * layout.servers;
  const needed = app + layout.reserved;
  const available = server.maxConnections - server.superuserReserved;
  const fits = needed <= available;
  const summary =
    `pool ${layout.poolMax} × ${layout.workersPerServer} workers × ${layout.servers} servers = ${app}` +
    ` + ${layout.reserved} reserved = ${needed} ${fits ? '≤' : '>'} ${available}` +
    ` (max_connections ${server.maxConnections} − ${server.superuserReserved} for superusers)`;
  return { needed, available, fits, summary };
}

export class ConnectionBudgetError extends Error {
  constructor(readonly budget: Budget) {
    super(
      `The connection budget does not fit: ${budget.summary}. Lower DATABASE_POOL_MAX, run fewer workers or servers, raise max_connections, or put PgBouncer in front (DATABASE_BUDGET_CHECK=off).`,
    );
    this.name = 'ConnectionBudgetError';
  }
}

/**
 * This process's share in words: its pool to the primary and one pool of the same size to each
 * replica. A replica needs no check of its own: a hot standby refuses to run with a smaller
 * `max_connections` than its primary's, so a layout that fits the primary fits each replica.
 */
function share(config: Config['database']): string {
  const replicas = config.replicas.urls.length;
  return `this process opens at most ${config.poolMax}${replicas === 0 ? '' : ` to the primary and ${config.poolMax} to each of ${replicas} ${replicas === 1 ? 'replica' : 'replicas'}`}`;
}

/** Reads the server's limits, states this process's share, and warns or refuses when the layout cannot fit. */
export async function checkConnectionBudget(
  db: Db,
  config: Config['database'],
  logger: Logger,
): Promise<Budget | undefined> {
  if (config.budget.onOverflow === 'off') {
    // Behind PgBouncer the pooler's own limits bound the server's connections; the share still
    // tells the operator what this process asks of the pooler.
    logger.info(
      { poolMax: config.poolMax },
      `connection budget: ${share(config)}; not checked against max_connections (DATABASE_BUDGET_CHECK=off: a pooler's limits apply)`,
    );
    return undefined;
  }
  const { rows } = await sql<{ max: number; reserved: number }>`
    select current_setting('max_connections')::int as max,
           current_setting('superuser_reserved_connections')::int as reserved`.execute(db);
  const row = rows[0];
  if (row === undefined) return undefined;
  const budget = connectionBudget(
    {
      poolMax: config.poolMax,
      workersPerServer: config.budget.workersPerServer,
      servers: config.budget.servers,
      reserved: config.budget.reserved,
    },
    { maxConnections: row.max, superuserReserved: row.reserved },
  );
  const fields = { needed: budget.needed, available: budget.available, poolMax: config.poolMax };
  if (budget.fits) {
    logger.info(fields, `connection budget: ${share(config)}; ${budget.summary}`);
  } else if (config.budget.onOverflow === 'refuse') {
    throw new ConnectionBudgetError(budget);
  } else {
    logger.warn(
      fields,
      `connection budget does not fit: ${budget.summary}; under full load the last connections will be refused`,
    );
  }
  return budget;
}
