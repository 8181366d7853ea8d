import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { Config } from '../config.js';
import type { Db, Engine } from '../db/database.js';
import type { Mailer } from '../infra/mail/mailer.js';
import type { CounterStore } from '../infra/rate-limit/counter-store.js';
import { accountTokenKey } from '../modules/auth/account-tokens.js';
import {
  type AccountMail,
  type AccountsDeps,
  accountJobs,
  deliverAccountMail,
  runPasswordResetJob,
} from '../modules/auth/accounts.service.js';
import type { AuthDeps } from '../modules/auth/auth.deps.js';
import { deleteExpired as deleteExpiredIdempotencyKeys } from '../modules/idempotency/idempotency.service.js';
import { deleteExpiredSessionsAndJobs } from './cleanup.js';
import { createJobQueue, type JobQueue, jobPayload } from './queue.js';
import {
  createJobMetrics,
  createJobWorker,
  type JobHandler,
  type JobRunner,
  type JobWorker,
} from './worker.js';

export const maintenanceJobs = {
  idempotencyCleanup: 'cleanup.idempotency-keys',
  sessionCleanup: 'cleanup.sessions',
  cacheWarmUp: 'cache.warm-up',
} as const;

export function createAccountsDeps(input: {
  auth: AuthDeps;
  config: Config;
  counters: CounterStore;
  queue: JobQueue;
  logger: Logger;
}): AccountsDeps {
  const { jwtSecret, jwtNextSecrets, jwtPreviousSecrets } = input.config.auth;
  return {
    auth: input.auth,
    config: input.config.accounts,
    counters: input.counters,
    queue: input.queue,
    // Derived from the access-token key ring: one set of secrets to manage. New tokens come from
    // the current secret. The mail job recomputes a token from its id, possibly on a process at
    // another step of a rolling rotation than the one that stored the token's hash, so it tries
    // every key of the ring against that hash (accounts.service.ts tokenFor). A link already mailed
    // needs no key (its use checks only the hash); a queued mail whose key has left the ring fails
    // and is dead-lettered rather than mailing a link that cannot work.
    tokenKey: accountTokenKey(jwtSecret),
    tokenKeys: [...new Set([jwtSecret, ...jwtNextSecrets, ...jwtPreviousSecrets])].map(accountTokenKey),
    logger: input.logger,
  };
}

export function createQueue(config: Config, traceParent?: () => string | undefined): JobQueue {
  return createJobQueue({
    maxAttempts: config.jobs.maxAttempts,
    ...(traceParent === undefined ? {} : { traceParent }),
  });
}

/**
 * Warms the product cache after a deploy by reading the first pages of the catalog through the
 * service's own HTTP API (`CACHE_WARM_UP_URL`): the entries are exactly what a client's request
 * would have stored. Shared by every server with Redis; with the in-process cache it warms the
 * process that answered.
 */
async function warmUpCache(
  baseUrl: string,
  pages: number,
  logger: Logger,
  signal: AbortSignal,
): Promise<void> {
  // Each read ends after 10 s, or as soon as this worker loses the job's lease (another runs it).
  const bounded = () => AbortSignal.any([signal, AbortSignal.timeout(10_000)]);
  let cursor: string | undefined;
  let loaded = 0;
  for (let page = 0; page < pages; page++) {
    const url = new URL('/api/products', baseUrl);
    url.searchParams.set('limit', '100');
    if (cursor !== undefined) url.searchParams.set('cursor', cursor);
    const response = await fetch(url, { signal: bounded() });
    if (!response.ok) throw new Error(`cache warm-up: GET ${url.pathname} answered ${response.status}`);
    const body = (await response.json()) as { items: Array<{ id: string }>; nextCursor: string | null };
    for (const item of body.items.slice(0, 20)) {
      const product = await fetch(new URL(`/api/products/${item.id}`, baseUrl), { signal: bounded() });
      await product.arrayBuffer();
      loaded++;
    }
    if (body.nextCursor === null) break;
    cursor = body.nextCursor;
  }
  logger.info({ event: 'cache_warmed', pages, products: loaded }, 'product cache warmed up');
}

export function jobHandlers(input: {
  db: Db;
  config: Config;
  accounts: AccountsDeps;
  mailer: Mailer;
}): Record<string, JobHandler> {
  const { db, config, accounts, mailer } = input;
  return {
    [accountJobs.passwordReset]: async ({ job }) =>
      runPasswordResetJob(accounts, job.id, jobPayload<{ email: string }>(job).email),
    [accountJobs.mail]: async ({ job, signal }) =>
      deliverAccountMail(accounts, mailer, jobPayload<AccountMail>(job), signal),
    [maintenanceJobs.idempotencyCleanup]: async ({ logger }) => {
      const removed = await deleteExpiredIdempotencyKeys(db);
      if (removed > 0) logger.info({ removed }, 'expired idempotency keys removed');
    },
    [maintenanceJobs.sessionCleanup]: async ({ logger }) => {
      const removed = await deleteExpiredSessionsAndJobs(db, config.jobs.retentionHours);
      logger.info({ event: 'cleanup', ...removed }, 'expired sessions, tokens and old jobs removed');
    },
    [maintenanceJobs.cacheWarmUp]: async ({ logger, signal }) =>
      warmUpCache(config.jobs.warmUpUrl, config.jobs.warmUpPages, logger, signal),
  };
}

/** The workers of one process: the service's own (JOBS_IN_PROCESS) or `npm run worker`'s. */
export function createWorker(input: {
  db: Db;
  engine: Engine;
  config: Config;
  queue: JobQueue;
  accounts: AccountsDeps;
  mailer: Mailer;
  registry: Registry;
  logger: Logger;
  runner?: JobRunner;
}): JobWorker {
  const { config, queue, db } = input;
  const worker = createJobWorker({
    db,
    engine: input.engine,
    config: config.jobs,
    handlers: jobHandlers(input),
    recurring: [
      {
        name: maintenanceJobs.idempotencyCleanup,
        intervalMs: config.idempotency.cleanupIntervalSeconds * 1000,
      },
      { name: maintenanceJobs.sessionCleanup, intervalMs: config.jobs.sessionCleanupIntervalSeconds * 1000 },
    ],
    // One job per interval, whichever worker enqueues it first (the key is unique).
    enqueueRecurring: async (job, slot) => {
      await queue.enqueue(db, job.name, {}, { key: `${job.name}:${job.intervalMs}:${slot}`, maxAttempts: 3 });
    },
    metrics: createJobMetrics(input.registry),
    logger: input.logger,
    ...(input.runner === undefined ? {} : { runner: input.runner }),
  });
  queue.onEnqueued(() => worker.wake());
  return worker;
}

/** After a deploy: one warm-up per build (its key), a few seconds after the first start. */
export async function enqueueCacheWarmUp(queue: JobQueue, db: Db, config: Config): Promise<void> {
  if (config.jobs.warmUpPages <= 0) return;
  await queue.enqueue(
    db,
    maintenanceJobs.cacheWarmUp,
    {},
    {
      key: `cache-warm-up:${config.build.version}+${config.build.commit}`,
      runAt: new Date(Date.now() + 5000),
    },
  );
}
