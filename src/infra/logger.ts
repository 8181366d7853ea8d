import { createRequire } from 'node:module';
import pino, { type DestinationStream, type Logger, type LoggerOptions } from 'pino';
import type { Config } from '../config.js';

/**
 * Paths pino censors wherever they appear in a log object. Request and response bodies are never
 * logged whole; this list catches the secrets that could still slip in through an error or a
 * header object.
 */
export const redactPaths = [
  'password',
  '*.password',
  'currentPassword',
  '*.currentPassword',
  'newPassword',
  '*.newPassword',
  'token',
  '*.token',
  'accessToken',
  '*.accessToken',
  'refreshToken',
  '*.refreshToken',
  'secret',
  '*.secret',
  'headers.authorization',
  'headers.cookie',
  'headers["set-cookie"]',
  '*.headers.authorization',
  '*.headers.cookie',
  '*.headers["set-cookie"]',
  'authorization',
  'cookie',
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
export function createLogger(config: Pick<Config, 'log' | 'env'>, destination?: DestinationStream): Logger {
  const options: LoggerOptions = {
    level: config.log.level,
    base: { service: 'shipshape', pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: redactPaths, censor: '[REDACTED]' },
    formatters: { level: (label) => ({ level: label }) },
  };
  if (destination !== undefined) return pino(options, destination);
  const transport = config.env === 'production' ? undefined : prettyTransport();
  return transport === undefined ? pino(options) : pino({ ...options, transport });
}
