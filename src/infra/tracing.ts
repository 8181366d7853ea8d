import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import {
  type Context,
  context,
  defaultTextMapGetter,
  defaultTextMapSetter,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  type Tracer,
  trace,
} from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  BatchSpanProcessor,
  NodeTracerProvider,
  ParentBasedSampler,
  SimpleSpanProcessor,
  type SpanExporter,
  type SpanProcessor,
  TraceIdRatioBasedSampler,
} from '@opentelemetry/sdk-trace-node';
import type { FastifyInstance } from 'fastify';
import type { Redis } from 'ioredis';
import type pg from 'pg';
import type { Config } from '../config.js';
import type { JobRow } from '../jobs/jobs.table.js';

/**
 * OpenTelemetry traces (decision 0063), built only when TRACING_ENABLED=true: when off, nothing here
 * is called — no hook, no wrapped listener, no log mixin — so the hot path is the one without it.
 *
 * Spans: one SERVER span per HTTP request (W3C `traceparent` accepted, the route template as its
 * name), a CLIENT span per PostgreSQL query and per Redis command made inside a traced operation,
 * and a CONSUMER span per job attempt, continuing the trace that enqueued the job (its
 * `trace_parent`). The official SDK 2.x line (Node 18.19+/20.6+; the 3.x line needs Node 22.15),
 * with the spans made here rather than by the auto-instrumentation packages, whose require hooks do
 * not see this ES-module service's imports.
 */
export interface Tracing {
  readonly tracer: Tracer;
  /** The active span's `traceparent`, for a job enqueued now. */
  traceParent(): string | undefined;
  /** Wraps the HTTP server's request listeners: every request runs inside its server span. */
  instrumentServer(server: Server): void;
  /** Names each server span after its route template (a hook; only when tracing is on). */
  instrumentFastify(app: FastifyInstance): void;
  /** `replica`: the replica's name, on every span of a read replica's pool. */
  instrumentPgPool(pool: pg.Pool, database: string, replica?: string): void;
  instrumentRedis(client: Redis): void;
  /** Runs a job attempt inside a span that continues the job's trace. */
  runJob(job: JobRow, run: () => Promise<void>): Promise<void>;
  /** pino mixin: the trace and span id of the active span on every log line. */
  logFields(): Record<string, string>;
  shutdown(): Promise<void>;
}

const propagator = new W3CTraceContextPropagator();
const instrumented = Symbol('shipshape.traced');
let registered = false;

/** The active context's W3C traceparent (undefined outside a sampled span). */
function currentTraceParent(): string | undefined {
  const carrier: Record<string, string> = {};
  propagator.inject(context.active(), carrier, defaultTextMapSetter);
  return carrier.traceparent;
}

export function logFieldsOf(ctx: Context = context.active()): Record<string, string> {
  const span = trace.getSpan(ctx);
  if (span === undefined) return {};
  const { traceId, spanId } = span.spanContext();
  return { traceId, spanId };
}

function endWith(span: Span, error: unknown): void {
  if (error !== undefined) {
    span.recordException(error instanceof Error ? error : String(error));
    span.setStatus({
      code: SpanStatusCode.ERROR,
      message: error instanceof Error ? error.message : String(error),
    });
  }
  span.end();
}

export function createTracing(
  config: Config['tracing'],
  build: Config['build'],
  options: { exporter?: SpanExporter } = {},
): Tracing | undefined {
  if (!config.enabled) return undefined;
  const processors: SpanProcessor[] = [];
  if (options.exporter !== undefined) processors.push(new SimpleSpanProcessor(options.exporter));
  if (config.otlpEndpoint !== undefined) {
    processors.push(new BatchSpanProcessor(new OTLPTraceExporter({ url: config.otlpEndpoint })));
  }
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({
      'service.name': config.serviceName,
      'service.version': build.version,
      'service.instance.id': `${process.pid}`,
      'vcs.ref.head.revision': build.commit,
    }),
    sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(config.samplePercent / 100) }),
    spanProcessors: processors,
  });
  // The context manager (AsyncLocalStorage) and propagator are process-wide; set them once.
  if (!registered) {
    provider.register();
    registered = true;
  }
  const tracer = provider.getTracer('shipshape', build.version);
  // Database and Redis spans only inside a traced operation: background polling makes no root spans.
  const insideTrace = () => trace.getSpan(context.active()) !== undefined;

  return {
    tracer,
    traceParent: currentTraceParent,
    instrumentServer(server) {
      const listeners = server.listeners('request') as Array<
        (req: IncomingMessage, res: ServerResponse) => void
      >;
      server.removeAllListeners('request');
      server.on('request', (req: IncomingMessage, res: ServerResponse) => {
        const parent = propagator.extract(ROOT_CONTEXT, req.headers, defaultTextMapGetter);
        const path = (req.url ?? '/').split('?')[0] ?? '/';
        const span = tracer.startSpan(
          req.method ?? 'HTTP',
          {
            kind: SpanKind.SERVER,
            attributes: {
              'http.request.method': req.method ?? '',
              'url.path': path,
              'network.protocol.version': req.httpVersion,
            },
          },
          parent,
        );
        const active = trace.setSpan(parent, span);
        // Every listener of the request and the response (body parsing, hooks, the log line) runs
        // in the span's context, not in the socket's.
        context.bind(active, req);
        context.bind(active, res);
        let ended = false;
        const end = () => {
          if (ended) return;
          ended = true;
          span.setAttribute('http.response.status_code', res.statusCode);
          if (res.statusCode >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
          span.end();
        };
        res.once('finish', end);
        res.once('close', end);
        context.with(active, () => {
          for (const listener of listeners) listener.call(server, req, res);
        });
      });
    },
    instrumentFastify(app) {
      app.addHook('onRequest', (request, _reply, done) => {
        const span = trace.getSpan(context.active());
        const route = request.routeOptions.url;
        if (span !== undefined && route !== undefined) {
          span.updateName(`${request.method} ${route}`);
          span.setAttribute('http.route', route);
        }
        done();
      });
    },
    instrumentPgPool(pool, database, replica) {
      const connect = pool.connect.bind(pool) as () => Promise<pg.PoolClient>;
      const wrap = (client: pg.PoolClient): pg.PoolClient => {
        const marked = client as pg.PoolClient & { [instrumented]?: true };
        if (marked[instrumented]) return client;
        marked[instrumented] = true;
        const query = client.query.bind(client) as (...args: unknown[]) => unknown;
        (client as unknown as { query: (...args: unknown[]) => unknown }).query = (...args: unknown[]) => {
          if (!insideTrace() || typeof args[0] !== 'string') return query(...args);
          const text = args[0];
          const operation = /^\s*(\w+)/.exec(text)?.[1]?.toUpperCase() ?? 'QUERY';
          const span = tracer.startSpan(`${operation} ${database}`, {
            kind: SpanKind.CLIENT,
            attributes: {
              'db.system.name': 'postgresql',
              'db.namespace': database,
              'db.operation.name': operation,
              // Placeholders only: parameter values never reach a span.
              'db.query.text': text.slice(0, 2000),
              ...(replica === undefined ? {} : { 'shipshape.db.replica': replica }),
            },
          });
          const result = context.with(trace.setSpan(context.active(), span), () => query(...args));
          if (result instanceof Promise) {
            result.then(
              () => endWith(span, undefined),
              (err: unknown) => endWith(span, err),
            );
          } else {
            span.end();
          }
          return result;
        };
        return client;
      };
      (pool as unknown as { connect: (...args: unknown[]) => unknown }).connect = (...args: unknown[]) => {
        if (typeof args[0] === 'function') {
          const callback = args[0] as (
            err: Error | undefined,
            client?: pg.PoolClient,
            done?: unknown,
          ) => void;
          return (connect as unknown as (cb: typeof callback) => void)((err, client, done) =>
            callback(err, client === undefined ? client : wrap(client), done),
          );
        }
        return connect().then(wrap);
      };
    },
    instrumentRedis(client) {
      const marked = client as Redis & { [instrumented]?: true };
      if (marked[instrumented]) return;
      marked[instrumented] = true;
      const send = client.sendCommand.bind(client);
      client.sendCommand = ((command: Parameters<Redis['sendCommand']>[0], stream?: unknown) => {
        if (!insideTrace()) return send(command, stream as never);
        const name = String(command.name).toUpperCase();
        const span = tracer.startSpan(`redis ${name}`, {
          kind: SpanKind.CLIENT,
          attributes: { 'db.system.name': 'redis', 'db.operation.name': name },
        });
        command.promise.then(
          () => endWith(span, undefined),
          (err: unknown) => endWith(span, err),
        );
        return send(command, stream as never);
      }) as Redis['sendCommand'];
    },
    async runJob(job, run) {
      const parent =
        job.trace_parent === null
          ? ROOT_CONTEXT
          : propagator.extract(ROOT_CONTEXT, { traceparent: job.trace_parent }, defaultTextMapGetter);
      const span = tracer.startSpan(
        `job ${job.name}`,
        {
          kind: SpanKind.CONSUMER,
          attributes: {
            'messaging.system': 'shipshape.jobs',
            'job.id': job.id,
            'job.name': job.name,
            'job.attempt': job.attempts,
          },
        },
        parent,
      );
      let failure: unknown;
      try {
        await context.with(trace.setSpan(parent, span), run);
      } catch (err) {
        failure = err ?? new Error('job failed');
        throw err;
      } finally {
        endWith(span, failure);
      }
    },
    logFields: () => logFieldsOf(),
    shutdown: () => provider.shutdown(),
  };
}
