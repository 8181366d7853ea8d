import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyBaseLogger } from 'fastify';
import type { Config } from '../config.js';
import { schemaProblem } from '../db/schema-status.js';
import { describeDatabase } from '../lib/targets.js';
import type { DatabaseHandle } from './database.js';

/** A start-up failure the operator can act on: main.ts prints its one-line message, no stack. */
export class StartupError extends Error {
  override name = 'StartupError';
}

/** `listen` failures that have an obvious fix, as one line naming the variable to change. */
export function listenProblem(err: unknown, variable: string, host: string, port: number): Error {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  if (code === 'EADDRINUSE')
    return new StartupError(
      `${variable} ${port} is in use on ${host} (another Shipshape, or another program): stop it or set ${variable} to a free port`,
    );
  if (code === 'EACCES')
    return new StartupError(`${variable} ${port} needs privileges on ${host}: use a port above 1023`);
  if (code === 'EADDRNOTAVAIL')
    return new StartupError(`HOST ${host} is not an address of this machine: fix HOST`);
  return err instanceof Error ? err : new Error(String(err));
}

/** PostgreSQL answers that waiting cannot fix: the database is missing or the credentials are wrong. */
export function permanentProblem(err: unknown, database: Config['database']): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  if (database.url === undefined) return undefined;
  const url = new URL(database.url);
  const name = decodeURIComponent(url.pathname.slice(1));
  if (code === '3D000')
    return `database "${name}" does not exist on ${url.hostname}:${url.port || '5432'}: create it (createdb -h ${url.hostname} -p ${url.port || '5432'} -U ${decodeURIComponent(url.username) || 'postgres'} ${name}) or fix DATABASE_URL`;
  if (code === '28P01' || code === '28000')
    return `PostgreSQL refused the login in DATABASE_URL (user "${decodeURIComponent(url.username)}"): fix the user or password, or pg_hba.conf`;
  return undefined;
}

/**
 * Waits until the process can serve: the database answers and its schema is what this code needs.
 * Logs why it is waiting at once and then every 10 s. A database that does not answer within
 * `waitSeconds` (0: forever), a missing database or refused credentials end the start-up with one
 * line saying what to do; a schema that is behind keeps it waiting (not ready, /ready says why) for
 * the operator's `npm run db:migrate`.
 */
export async function waitUntilServable(
  database: DatabaseHandle,
  config: Config['database'],
  waitSeconds: number,
  logger: FastifyBaseLogger,
): Promise<void> {
  const started = Date.now();
  let reported = 0;
  let lastReason = '';
  for (;;) {
    let reason: string;
    let unreachable = false;
    try {
      await database.ping(2000);
      const problem = await schemaProblem(database.db, database.engine);
      if (problem === undefined) return;
      reason = problem;
    } catch (err) {
      const permanent = permanentProblem(err, config);
      if (permanent !== undefined) throw new StartupError(permanent);
      unreachable = true;
      reason = `database not reachable (${describeDatabase(config)}): ${(err as Error).message}`;
    }
    const waitedSeconds = Math.round((Date.now() - started) / 1000);
    if (unreachable && waitSeconds > 0 && waitedSeconds >= waitSeconds)
      throw new StartupError(
        `${reason}; gave up after ${waitedSeconds} s (DATABASE_WAIT_SECONDS): check that the database runs and DATABASE_URL points at it`,
      );
    if (reason !== lastReason || Date.now() - reported >= 10_000) {
      logger.warn({ reason, waitedSeconds }, `not ready yet, waiting: ${reason}`);
      reported = Date.now();
      lastReason = reason;
    }
    await sleep(1000);
  }
}

/** What a developer who just ran `npm start` can do next (logged once, in development only). */
export function nextSteps(host: string, port: number): string {
  const shown = ['0.0.0.0', '::', ''].includes(host) ? 'localhost' : host.includes(':') ? `[${host}]` : host;
  const base = `http://${shown}:${port}`;
  return `next: open ${base}/docs (API docs and try-it-out), ${base}/health, ${base}/ready; demo catalog: npm run db:seed; first admin: npm run user:create-admin -- --email you@example.com --username admin (run both with the same DATABASE_URL as this server)`;
}
