import { closeSync, mkdirSync, openSync, write, writeSync } from 'node:fs';
import { dirname } from 'node:path';

/**
 * An append-only log file that can fail without taking the service with it.
 *
 * pino's file destination (sonic-boom 4.2) emits 'error' on ENOSPC — unhandled, the worker's
 * uncaught-exception handler exits — and its synchronous flush, which runs at exit, retries a write
 * that failed with anything but EAGAIN for ever, 100 ms at a time. With the log disk full, every PM2
 * worker hung in its exit handler: online for PM2, answering nothing, even after space came back
 * (chaos scenario "log disk full", issue 14). Logs are worth less than the requests they describe, so:
 *
 * - one asynchronous write at a time; lines that come meanwhile wait in memory, at most `maxBytes`
 *   (beyond that they are dropped and counted);
 * - a failed write drops what it carried and counts it; the next write tries again, so logging
 *   resumes by itself when the disk has room;
 * - at exit, one synchronous attempt, never a retry loop;
 * - `reopen()` (log rotation) opens the path again; a file that cannot be opened is retried on
 *   the next write.
 */
export interface LogFile {
  write(chunk: string): void;
  /** Lines dropped (failed writes or a full buffer) since the last call. */
  takeDropped(): number;
  reopen(): void;
  /**
   * One synchronous attempt to write what waits (and `last`, after it), then close. At exit: a
   * write() now would start an asynchronous write that the exiting process never completes.
   */
  closeSync(last?: string): void;
}

export function openLogFile(path: string, maxBytes = 16 * 1024 * 1024): LogFile {
  let fd: number | undefined;
  let queue: Buffer[] = [];
  let queued = 0;
  let writing = false;
  let reopenWanted = false;
  let dropped = 0;

  const lines = (chunks: readonly Buffer[]) =>
    chunks.reduce((n, c) => n + c.reduce((m, byte) => m + (byte === 10 ? 1 : 0), 0), 0);

  const open = () => {
    try {
      mkdirSync(dirname(path), { recursive: true });
      fd = openSync(path, 'a');
    } catch {
      fd = undefined;
    }
  };

  const kick = () => {
    if (writing) return;
    if (reopenWanted) {
      reopenWanted = false;
      if (fd !== undefined) {
        try {
          closeSync(fd);
        } catch {
          // already closed
        }
      }
      fd = undefined;
    }
    if (fd === undefined) open();
    if (fd === undefined || queue.length === 0) return;
    const data = queue.length === 1 ? (queue[0] as Buffer) : Buffer.concat(queue);
    queue = [];
    queued = 0;
    writing = true;
    write(fd, data, 0, data.length, null, (err, written) => {
      writing = false;
      if (err !== null) {
        dropped += lines([data]);
      } else if (written < data.length) {
        const rest = data.subarray(written);
        queue.unshift(rest);
        queued += rest.length;
      }
      if (queue.length > 0 || reopenWanted) kick();
    });
  };

  open();
  return {
    write(chunk) {
      const data = Buffer.from(chunk);
      if (queued + data.length > maxBytes) {
        dropped += lines([data]);
        return;
      }
      queue.push(data);
      queued += data.length;
      kick();
    },
    takeDropped() {
      const n = dropped;
      dropped = 0;
      return n;
    },
    reopen() {
      reopenWanted = true;
      kick();
    },
    closeSync(last) {
      if (last !== undefined && last !== '') queue.push(Buffer.from(last));
      if (fd === undefined) open();
      if (fd === undefined) return;
      try {
        if (queue.length > 0) writeSync(fd, Buffer.concat(queue));
      } catch {
        // the disk is full or gone: those lines are lost, the exit is not delayed
      }
      queue = [];
      queued = 0;
      try {
        closeSync(fd);
      } catch {
        // already closed
      }
      fd = undefined;
    },
  };
}
