import type { Queryable } from '../db/database.js';
import { deleteExpiredAccountTokens } from '../modules/auth/account-tokens.js';

const dayMs = 86_400_000;

/**
 * What the `cleanup.sessions` job deletes: refresh tokens and sessions that ended more than a day
 * ago (an access token never outlives its session, so no revocation check needs them), account
 * tokens a day past their expiry, and finished or dead jobs older than the retention. Returns the
 * counts. Replaces nothing the service did before: expired sessions used to stay forever.
 */
export async function deleteExpiredSessionsAndJobs(
  db: Queryable,
  retentionHours: number,
  now = new Date(),
): Promise<{ refreshTokens: number; sessions: number; accountTokens: number; jobs: number }> {
  const cutoff = new Date(now.getTime() - dayMs).toISOString();
  const refreshTokens = await db
    .deleteFrom('refresh_tokens')
    .where('expires_at', '<', cutoff)
    .executeTakeFirst();
  const sessions = await db.deleteFrom('sessions').where('expires_at', '<', cutoff).executeTakeFirst();
  const accountTokens = await deleteExpiredAccountTokens(db, cutoff);
  const jobs = await db
    .deleteFrom('jobs')
    .where('state', 'in', ['succeeded', 'dead'])
    .where('finished_at', '<', new Date(now.getTime() - retentionHours * 3_600_000).toISOString())
    .executeTakeFirst();
  return {
    refreshTokens: Number(refreshTokens.numDeletedRows),
    sessions: Number(sessions.numDeletedRows),
    accountTokens,
    jobs: Number(jobs.numDeletedRows),
  };
}
