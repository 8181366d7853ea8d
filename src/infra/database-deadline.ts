import type { PostgresPool, PostgresPoolClient } from 'kysely';
import type pg from 'pg';

/** `statement_timeout` lifted for the transaction (set to 0), and the end of a transaction. */
const liftsStatementTimeout =
  /set_config\(\s*'statement_timeout'\s*,\s*'0'|statement_timeout\s*(=|to)\s*'?0'?(\s|;|$)/i;
const endsTransaction = /^\s*(commit|rollback|end|abort)\b/i;

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
 */
export function withRoundTripDeadline(pool: pg.Pool, deadlineMs: number): PostgresPool {
  return {
    async connect(): Promise<PostgresPoolClient> {
      const client = await pool.connect();
      let abandoned = false;
      let unbounded = false;
      const query = (text: string, parameters: readonly unknown[]) => {
        if (abandoned)
          return Promise.reject(
            Object.assign(new Error('PostgreSQL connection abandoned after a missed deadline'), {
              code: 'ETIMEDOUT',
            }),
          );
        if (endsTransaction.test(text)) unbounded = false;
        else if (liftsStatementTimeout.test(text)) unbounded = true;
        if (unbounded) return client.query(text, [...parameters]);
        let timer: NodeJS.Timeout | undefined;
        const deadline = new Promise<never>((_, reject) => {
          timer = setTimeout(() => {
            abandoned = true;
            // Not a graceful end (it would wait for the peer that stopped answering): the socket goes now.
            (
              client as unknown as { connection?: { stream?: { destroy(): void } } }
            ).connection?.stream?.destroy();
            reject(
              Object.assign(new Error(`PostgreSQL did not answer within ${deadlineMs} ms`), {
                code: 'ETIMEDOUT',
              }),
            );
          }, deadlineMs);
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
