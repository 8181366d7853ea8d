import { createRequire } from 'node:module';
import { context, trace } from '@opentelemetry/api';
import pino, { type DestinationStream, type Logger, type LoggerOptions } from 'pino';
import type { Config } from '../config.js';
import { createPm2Destination } from './pm2-log.js';

/**
 * Paths pino censors wherever they appear in a log object. Request and response bodies are never
 * logged whole; this list catches the secrets that could still slip in through an error or a
 * header object. Every path is spelled out: pino's wildcard paths (`*.password`) cost about 9 µs a
 * log line — more than the rest of the line — and a line is written for every request.
 */
const secretFields = [
  'password',
  'currentPassword',
  'newPassword',
  'token',
  'accessToken',
  'refreshToken',
  'secret',
  'authorization',
  'cookie',
];
const containers = [
  'body',
  'headers',
  'input',
  'user',
  'query',
  'req.headers',
  'request.headers',
  'res.headers',
];
export const redactPaths = [
  ...secretFields,
  ...containers.flatMap((container) => secretFields.map((field) => `${container}.${field}`)),
  'headers["set-cookie"]',
  'res.headers["set-cookie"]',
];

function prettyTransport(): LoggerOptions['transport'] | undefined {
  // Pretty output is for a developer at a terminal; pino-pretty is a dev dependency and may be absent.
  if (!process.stdout.isTTY) return undefined;
  try {
    createRequire(import.meta.url).resolve('pino-pretty');
  } catch {
    return undefined;
  }
  return { target: 'pino-pretty', options: { translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' } };
}

/**
 * The service's one logger: JSON lines on stdout (or the given stream), secrets redacted.
 * Infrastructure takes `logger.child({ component })`; handlers use `request.log`.
 */
/** The active span's trace and span id, on every line while tracing is on (decision 0063). */
function traceFields(): Record<string, string> {
  const span = trace.getSpan(context.active());
  if (span === undefined) return {};
  const { traceId, spanId } = span.spanContext();
  return { traceId, spanId };
}

let second = Number.NaN;
let secondPrefix = '';

/**
 * pino's `,"time":"<ISO 8601>"`, the same text as `pino.stdTimeFunctions.isoTime`, without building
 * a Date and formatting it for every line: the date and time up to the second are formatted once a
 * second, the milliseconds appended (the request log line's one costly step after the write itself,
 * in the warm read's profile: decision 0109).
 */
export function isoTimestamp(now = Date.now()): string {
  const s = Math.floor(now / 1000);
  if (s !== second) {
    second = s;
    secondPrefix = new Date(s * 1000).toISOString().slice(0, 20);
  }
  const ms = now - s * 1000;
  return `,"time":"${secondPrefix}${ms < 10 ? '00' : ms < 100 ? '0' : ''}${ms}Z"`;
}

export function createLogger(
  config: Pick<Config, 'log' | 'env'> & { readonly tracing?: Pick<Config['tracing'], 'enabled'> },
  destination?: DestinationStream,
): Logger {
  const options: LoggerOptions = {
    // Only with tracing on: otherwise no mixin runs at all.
    ...(config.tracing?.enabled === true ? { mixin: traceFields } : {}),
    level: config.log.level,
    base: { service: 'shipshape', pid: process.pid },
    timestamp: () => isoTimestamp(),
    redact: { paths: redactPaths, censor: '[REDACTED]' },
    formatters: { level: (label) => ({ level: label }) },
  };
  if (destination !== undefined) return pino(options, destination);
  // Under PM2, fd 1 is the daemon's own log; write where PM2's out_file/log_file say (pm2-log.ts).
  if (config.log.pm2 !== undefined) return pino(options, createPm2Destination(config.log.pm2));
  const transport = config.env === 'production' ? undefined : prettyTransport();
  if (transport !== undefined) return pino({ ...options, transport });
  // Buffered, asynchronous writes: a busy server writes its lines 8 KiB at a time instead of one
  // system call per request (measured: about 10 µs a request on this kind of machine). A timer
  // flushes quiet periods within a quarter second; pino flushes the rest synchronously at exit.
  const stdout = pino.destination({ dest: 1, sync: false, minLength: 8192 });
  setInterval(() => {
    stdout.flush();
  }, 250).unref();
  return pino(options, stdout);
}
