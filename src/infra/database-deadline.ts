import { AsyncLocalStorage } from 'node:async_hooks';
import type { PostgresPool, PostgresPoolClient } from 'kysely';
import type pg from 'pg';

/**
 * The current request's database budget, set per request by the app (DATABASE_REQUEST_BUDGET_MS):
 * `endsAt` (epoch ms) is when its database work must end. Each round trip alone is bounded below;
 * a request of several, each slow but under its own deadline, was not: with +2 s on every round
 * trip, logins and orders took over 10 s (the chaos suite's long run, issue 14) and clients gave
 * up first. Outside a request (start-up, jobs, the CLI) there is none.
 */
export interface RequestBudget {
  readonly endsAt: number;
  /** When the request's bookkeeping after its commit must end (set by its first `afterCommit`). */
  afterCommitEndsAt?: number;
}

export const requestDeadline = new AsyncLocalStorage<RequestBudget>();

/** Runs `work` (a request's database work) under a budget of `ms` from now. */
export function withRequestBudget<T>(ms: number, work: () => T): T {
  return requestDeadline.run({ endsAt: Date.now() + ms }, work);
}

/**
 * How long a request's bookkeeping after its commit may go on past its budget: one quick round
 * trip. The answer waits on it, so it cannot have a COMMIT's full round-trip deadline: with the
 * position read and a cache floor each allowed that, a request could outlast its budget and its
 * COMMIT by two more deadlines (the chaos suite's +2 s run: orders unanswered after 10 s).
 */
export const afterCommitAllowanceMs = 1000;

/**
 * Bookkeeping after a request's write committed (the WAL position for read-your-writes and for
 * cache floors): within what is left of the request's budget, or `afterCommitAllowanceMs` past it
 * when less is left — one allowance per request, shared by every such read — so a COMMIT that ended
 * at the budget's last moment still gets its position read, and the request answers within budget
 * + COMMIT + the allowance. Refusing it outright would not undo the write, only lose the position;
 * a read that misses its deadline makes the caller fall back to what is safe without the position
 * (the client's reads go to the primary).
 */
export function afterCommit<T>(work: () => Promise<T>): Promise<T> {
  const budget = requestDeadline.getStore();
  if (budget === undefined) return work();
  budget.afterCommitEndsAt ??= Math.max(budget.endsAt, Date.now() + afterCommitAllowanceMs);
  return requestDeadline.run({ endsAt: budget.afterCommitEndsAt }, work);
}

/** `statement_timeout` lifted for the transaction (set to 0), and the end of a transaction. */
const liftsStatementTimeout =
  /set_config\(\s*'statement_timeout'\s*,\s*'0'|statement_timeout\s*(=|to)\s*'?0'?(\s|;|$)/i;
const endsTransaction = /^\s*(commit|rollback|end|abort)\b/i;
const rollsBack = /^\s*(rollback|abort)\b/i;

const timedOut = (message: string) => Object.assign(new Error(message), { code: 'ETIMEDOUT' });

/**
 * A deadline on every PostgreSQL round trip, enforced by the client.
 *
 * `statement_timeout` is the server's: a server that accepted the connection and stopped answering,
 * or a network that loses its answers, never sends the cancellation, and pg waits for ever — the
 * chaos suite's "PostgreSQL hung" scenario held requests past every client timeout (issue 14). pg's
 * own `query_timeout` rejects the query but keeps the connection, whose late answer would then be
 * read as the next query's (it even leaves the query queued behind it).
 *
 * So: a query without an answer after `deadlineMs` is rejected with code ETIMEDOUT (→ 503 with
 * Retry-After, lib/db-errors.ts), the connection is abandoned — every later query on it (Kysely's
 * ROLLBACK) fails at once — and it is destroyed on release, never reused.
 *
 * The deadline follows the statement timeout. A transaction that lifts it (`statement_timeout` set to
 * 0 — the migration lock waits up to an hour for another process's migration) runs without the
 * deadline until it commits or rolls back.
 *
 * Within a request (`requestDeadline`), a round trip also ends at the request's deadline: one that
 * would start after it is refused, one in flight is cut there — both abandon the connection, so
 * PostgreSQL rolls back what the request began. A ROLLBACK always runs, and a COMMIT once sent is
 * never cut by the request's deadline (only by its own): cutting it would answer 503 for work that
 * may have been committed.
 */
export function withRoundTripDeadline(pool: pg.Pool, deadlineMs: number): PostgresPool {
  return {
    async connect(): Promise<PostgresPoolClient> {
      const client = await pool.connect();
      let abandoned = false;
      let unbounded = false;
      const abandon = () => {
        abandoned = true;
        // Not a graceful end (it would wait for the peer that stopped answering): the socket goes now.
        (
          client as unknown as { connection?: { stream?: { destroy(): void } } }
        ).connection?.stream?.destroy();
      };
      const query = (text: string, parameters: readonly unknown[]) => {
        if (abandoned)
          return Promise.reject(timedOut('PostgreSQL connection abandoned after a missed deadline'));
        const ends = endsTransaction.test(text);
        if (ends) unbounded = false;
        else if (liftsStatementTimeout.test(text)) unbounded = true;
        if (unbounded) return client.query(text, [...parameters]);
        let tripMs = deadlineMs;
        const requestEndsAt = requestDeadline.getStore()?.endsAt;
        if (requestEndsAt !== undefined && !rollsBack.test(text)) {
          const left = requestEndsAt - Date.now();
          if (left <= 0) {
            abandon();
            return Promise.reject(timedOut("the request's database budget was spent"));
          }
          if (!ends) tripMs = Math.min(tripMs, left);
        }
        let timer: NodeJS.Timeout | undefined;
        const deadline = new Promise<never>((_, reject) => {
          timer = setTimeout(() => {
            abandon();
            reject(
              timedOut(
                tripMs < deadlineMs
                  ? `PostgreSQL did not answer within the request's database budget (${tripMs} ms left)`
                  : `PostgreSQL did not answer within ${deadlineMs} ms`,
              ),
            );
          }, tripMs);
        });
        return Promise.race([client.query(text, [...parameters]), deadline]).finally(() =>
          clearTimeout(timer),
        );
      };
      return {
        // Kysely streams through a cursor only when the dialect is given one; this service never is.
        query: query as unknown as PostgresPoolClient['query'],
        // pg's release(truthy) removes the client from the pool and ends its connection.
        release: (destroy?: boolean) => client.release(abandoned || destroy === true ? true : undefined),
      };
    },
    end: () => pool.end(),
  };
}
