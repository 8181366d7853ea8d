import { randomUUID } from 'node:crypto';
import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest, HTTPMethods } from 'fastify';
import FindMyWay from 'find-my-way';
import { classifyDbError } from '../../lib/db-errors.js';
import { AppError, ErrorCode, type FieldError } from '../../lib/errors.js';
import { codeForStatus, problem, problemContentType } from './problem.js';
import { requestIdHeader } from './request-id.js';
import { apiSecurityHeaders } from './security-headers.js';

/**
 * One place turns every failure into RFC 9457 problem details: domain errors keep their code,
 * framework errors (bad JSON, wrong content type, oversized body, bad URL) become the matching 4xx,
 * and anything unexpected becomes a 500 that says nothing about its cause. The cause goes to the log.
 */

interface AjvIssue {
  instancePath?: string;
  message?: string;
  params?: Record<string, unknown>;
}

function fieldErrors(error: FastifyError): FieldError[] {
  const context = error.validationContext ?? 'body';
  return ((error.validation ?? []) as AjvIssue[]).map((issue) => {
    const missing = issue.params?.missingProperty ?? issue.params?.additionalProperty;
    const pointer = `${issue.instancePath ?? ''}${typeof missing === 'string' ? `/${missing}` : ''}`;
    const extra = issue.params?.additionalProperty;
    return {
      path: `/${context}${pointer}`,
      message: typeof extra === 'string' ? 'is not an allowed property' : (issue.message ?? 'is invalid'),
    };
  });
}

function sendProblem(
  reply: FastifyReply,
  status: number,
  code: ErrorCode,
  detail: string,
  errors?: readonly FieldError[],
): FastifyReply {
  return reply
    .code(status)
    .type(problemContentType)
    .send(problem(status, code, detail, reply.request.id, errors));
}

/** Told of every 5xx the handler answers (Sentry, when configured); never of a 4xx. */
export type ServerErrorListener = (error: unknown, request: FastifyRequest, status: number) => void;

function handleError(
  error: FastifyError,
  request: FastifyRequest,
  reply: FastifyReply,
  onServerError: ServerErrorListener | undefined,
): FastifyReply {
  if (error instanceof AppError) {
    if (error.options.headers !== undefined) reply.headers(error.options.headers);
    if (error.status >= 500) {
      request.log.error({ err: error.cause ?? error }, error.message);
      onServerError?.(error.cause ?? error, request, error.status);
    }
    return sendProblem(reply, error.status, error.code, error.message, error.options.errors);
  }

  if (error.validation !== undefined) {
    return sendProblem(
      reply,
      400,
      ErrorCode.VALIDATION_FAILED,
      'The request is not valid.',
      fieldErrors(error),
    );
  }

  const status = error.statusCode;
  if (status !== undefined && status >= 400 && status < 500) {
    if (error.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || error instanceof SyntaxError) {
      return sendProblem(reply, 400, ErrorCode.VALIDATION_FAILED, 'The request body is not valid JSON.');
    }
    return sendProblem(reply, status, codeForStatus(status), error.message);
  }

  if (classifyDbError(error) === 'unavailable') {
    request.log.warn({ err: error }, 'database unavailable');
    onServerError?.(error, request, 503);
    reply.header('retry-after', '1');
    return sendProblem(reply, 503, ErrorCode.SERVICE_UNAVAILABLE, 'The service is temporarily unavailable.');
  }

  request.log.error({ err: error }, 'unhandled error');
  onServerError?.(error, request, 500);
  return sendProblem(reply, 500, ErrorCode.INTERNAL, 'An unexpected error occurred.');
}

/**
 * For Fastify's `frameworkErrors` option: URLs the router cannot even decode. These replies skip
 * every hook, so the headers other responses get from hooks are set here.
 */
export function handleFrameworkError(
  _error: FastifyError,
  request: FastifyRequest,
  reply: FastifyReply,
): void {
  reply.headers(apiSecurityHeaders).header(requestIdHeader, request.id);
  sendProblem(reply, 400, ErrorCode.VALIDATION_FAILED, 'The request URL is malformed.');
}

/**
 * For Fastify's `clientErrorHandler`: what Node's HTTP parser refuses before there is a request (a
 * garbage request line, oversized headers, a slow client's timeout). Written straight to the socket
 * — no hook runs — as problem+json with the security headers and a fresh request id, like every
 * other answer (security probe 2026-12-02, finding 11), then the connection is closed.
 */
export function handleClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const [status, code, detail] =
    err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? [408, ErrorCode.REQUEST_TIMEOUT, 'The request took too long to arrive.']
      : err.code === 'HPE_HEADER_OVERFLOW'
        ? [431, ErrorCode.HEADERS_TOO_LARGE, 'The request headers are too large.']
        : [400, ErrorCode.VALIDATION_FAILED, 'The request is not valid HTTP.'];
  const requestId = randomUUID();
  const body = JSON.stringify(problem(status, code, detail, requestId));
  const headers = {
    ...apiSecurityHeaders,
    'content-type': problemContentType,
    'content-length': String(Buffer.byteLength(body)),
    [requestIdHeader]: requestId,
    connection: 'close',
  };
  const head = Object.entries(headers)
    .map(([name, value]) => `${name}: ${value}\r\n`)
    .join('');
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  // Ended (so the answer is not lost to a reset while the client is still sending), and destroyed
  // soon after: a client that never reads must not hold a half-closed socket.
  socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\n${head}\r\n${body}`);
  const timer = setTimeout(() => socket.destroy(), 1000);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
}

export function errorHandling(app: FastifyInstance, onServerError?: ServerErrorListener): void {
  // A second router that only remembers which methods each route answers, so an unknown method on
  // a known path is a 405 with an Allow header rather than a puzzling 404.
  const methods = FindMyWay({ ignoreTrailingSlash: false, caseSensitive: true });
  const known = new Set<string>();
  app.addHook('onRoute', (route) => {
    for (const method of ([] as HTTPMethods[]).concat(route.method)) {
      const key = `${method} ${route.url}`;
      if (known.has(key)) continue;
      known.add(key);
      methods.on(method as FindMyWay.HTTPMethod, route.url, () => {});
    }
  });

  app.setErrorHandler((error: FastifyError, request, reply) =>
    handleError(error, request, reply, onServerError),
  );

  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split('?', 1)[0] ?? '/';
    const allowed = allowedMethods(methods, path);
    // A route that answers this method and still found nothing (a missing file under a wildcard
    // such as /docs/static/*) is a 404; a 405 is only for methods the path does not answer.
    if (allowed.length > 0 && !allowed.includes(request.method)) {
      reply.header('allow', allowed.join(', '));
      return sendProblem(reply, 405, ErrorCode.METHOD_NOT_ALLOWED, `${request.method} is not allowed here.`);
    }
    return sendProblem(reply, 404, ErrorCode.NOT_FOUND, 'No such resource.');
  });
}

const httpMethods = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;

function allowedMethods(router: FindMyWay.Instance<FindMyWay.HTTPVersion.V1>, path: string): string[] {
  return httpMethods.filter((method) => router.find(method, path) !== null);
}
