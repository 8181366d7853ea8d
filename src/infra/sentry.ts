import type { ErrorEvent } from '@sentry/node';
import type { Logger } from 'pino';
import type { Config } from '../config.js';

/**
 * Error reporting to Sentry, only when SENTRY_DSN is set: the SDK is imported on demand, so an
 * unset DSN costs nothing at all (no module loaded, no hook on any request).
 *
 * What is sent, and only that: the error (type, message, stack), the release and environment, and
 * tags for the request id, method, route template and status. The SDK's default integrations are
 * off — no automatic request data, breadcrumbs, console capture or instrumentation — so request
 * bodies, cookies, headers (Authorization included), query strings, passwords and tokens never
 * leave the process; `beforeSend` drops those fields again should anything add them. 4xx answers
 * are the client's mistakes and are never reported.
 */
export interface ErrorReporter {
  /** A request answered with a 5xx because of `error`. */
  requestFailed(error: unknown, request: RequestContext): void;
  /** An uncaught exception or unhandled rejection: reported and flushed before the process exits. */
  fatal(error: unknown, kind: 'uncaughtException' | 'unhandledRejection'): Promise<void>;
  /** Sends what is queued and stops the SDK. */
  close(): Promise<void>;
}

export interface RequestContext {
  readonly id: string;
  readonly method: string;
  /** The route template (`/api/products/:id`), or 'unmatched'. */
  readonly route: string;
  readonly status: number;
}

const flushTimeoutMs = 2000;

/** Keeps only what we send on purpose (see above); exported for the tests. */
export function scrubEvent(event: ErrorEvent): ErrorEvent {
  delete event.request;
  delete event.user;
  delete event.breadcrumbs;
  delete event.extra;
  if (event.contexts !== undefined) {
    delete event.contexts.response;
    delete event.contexts.cookies;
  }
  return event;
}

export async function createErrorReporter(
  config: Config['sentry'],
  logger: Logger,
): Promise<ErrorReporter | undefined> {
  if (config.dsn === undefined) return undefined;
  const Sentry = await import('@sentry/node');
  Sentry.init({
    dsn: config.dsn,
    environment: config.environment,
    release: config.release,
    // Nothing automatic: the errors we pass are the only events.
    defaultIntegrations: false,
    integrations: [Sentry.linkedErrorsIntegration(), Sentry.dedupeIntegration()],
    enableRuntimeChannelInjection: false,
    sendClientReports: false,
    maxBreadcrumbs: 0,
    dataCollection: {
      userInfo: false,
      cookies: false,
      httpHeaders: false,
      httpBodies: [],
      urlQueryParams: false,
      databaseQueryData: false,
      stackFrameVariables: false,
      queues: false,
      graphQL: { document: false, variables: false },
      genAI: { inputs: false, outputs: false },
      mcp: { inputs: false, outputs: false },
    },
    beforeSend: scrubEvent,
    beforeBreadcrumb: () => null,
  });
  logger.info({ environment: config.environment, release: config.release }, 'Sentry error reporting on');

  return {
    requestFailed(error, request) {
      Sentry.withScope((scope) => {
        scope.setTags({
          request_id: request.id,
          method: request.method,
          route: request.route,
          status_code: String(request.status),
        });
        scope.setTransactionName(`${request.method} ${request.route}`);
        Sentry.captureException(error);
      });
    },
    async fatal(error, kind) {
      Sentry.withScope((scope) => {
        scope.setTag('mechanism', kind);
        scope.setLevel('fatal');
        Sentry.captureException(error);
      });
      await Sentry.flush(flushTimeoutMs);
    },
    async close() {
      await Sentry.close(flushTimeoutMs);
    },
  };
}
