import type { DestinationStream } from 'pino';
import type { Pm2LogTarget } from '../config.js';
import { openLogFile } from './log-file.js';

const two = (n: number) => String(n).padStart(2, '0');

/**
 * Formats a date with the dayjs tokens PM2's log_date_format uses (YYYY MM DD HH mm ss SSS Z ZZ),
 * in local time like PM2. Other characters are copied; text in [brackets] is copied verbatim.
 */
export function formatPm2Date(format: string, date: Date): string {
  const offset = -date.getTimezoneOffset();
  const sign = offset >= 0 ? '+' : '-';
  const abs = Math.abs(offset);
  const tokens: Record<string, string> = {
    YYYY: String(date.getFullYear()),
    MM: two(date.getMonth() + 1),
    DD: two(date.getDate()),
    HH: two(date.getHours()),
    mm: two(date.getMinutes()),
    ss: two(date.getSeconds()),
    SSS: String(date.getMilliseconds()).padStart(3, '0'),
    Z: `${sign}${two(Math.floor(abs / 60))}:${two(abs % 60)}`,
    ZZ: `${sign}${two(Math.floor(abs / 60))}${two(abs % 60)}`,
  };
  return format.replace(/\[([^\]]*)\]|YYYY|SSS|MM|DD|HH|mm|ss|ZZ|Z/g, (match, literal: string | undefined) =>
    literal !== undefined ? literal : (tokens[match] ?? match),
  );
}

/**
 * The logger's destination inside a PM2 worker. PM2 captures a cluster worker's output by
 * replacing `process.stdout.write`: every call becomes an IPC message to the daemon plus a write to
 * each log file, with the timestamp prefixed once per call. pino's buffered fd-1 destination skips
 * that hook entirely (the lines end up in the daemon's own log), and calling the hook once per
 * request line costs a message and two writes per request.
 *
 * So this does what PM2's hook does, in batches: each line gets PM2's timestamp prefix (formatted
 * at most once per millisecond); lines collect in memory and go out at 8 KiB or every 250 ms as one
 * append to each of PM2's files (out_file, log_file) and one `log:out` message, which PM2's daemon
 * publishes on its bus for `pm2 logs`. At exit the rest is written synchronously. On PM2's
 * `log:reload` (`pm2 reloadLogs`, log rotation) the files are reopened.
 *
 * The files are written by log-file.ts, not pino's destination: a full log disk drops lines (and
 * says how many once it can write again) instead of hanging the worker (issue 14).
 */
export function createPm2Destination(target: Pm2LogTarget): DestinationStream {
  const files = target.files.map((dest) => openLogFile(dest));
  const send = typeof process.send === 'function' ? process.send.bind(process) : undefined;
  let pending = '';
  let stampMs = -1;
  let stamp = '';

  /** Appends what waits to each file; at exit synchronously (then closes them). */
  const drain = (exiting = false) => {
    if (pending === '' && !exiting) return;
    const chunk = pending;
    pending = '';
    for (const file of files) {
      const dropped = file.takeDropped();
      const text =
        dropped > 0
          ? `${JSON.stringify({ level: 'warn', time: new Date().toISOString(), service: 'shipshape', pid: process.pid, event: 'log_lines_dropped', count: dropped, msg: 'log lines dropped: the log file could not be written' })}\n${chunk}`
          : chunk;
      if (exiting) file.closeSync(text);
      else if (text !== '') file.write(text);
    }
    if (chunk !== '' && send !== undefined && process.connected)
      send({ type: 'log:out', data: chunk }, undefined, {}, () => {});
  };
  setInterval(drain, 250).unref();
  // The last lines (a worker's "stopped") are written before the process ends, not handed to an
  // asynchronous write that the exit would abandon.
  process.on('exit', () => drain(true));
  process.on('message', (message: unknown) => {
    if ((message as { type?: unknown } | null)?.type === 'log:reload')
      for (const file of files) file.reopen();
  });

  return {
    write(line: string) {
      if (target.dateFormat !== undefined) {
        const now = Date.now();
        if (now !== stampMs) {
          stampMs = now;
          stamp = `${formatPm2Date(target.dateFormat, new Date(now))}: `;
        }
        pending += stamp + line;
      } else {
        pending += line;
      }
      if (pending.length >= 8192) drain();
    },
  };
}
