// Forked by bench/run.ts with an IPC channel, as PM2 forks a cluster worker: times one request log
// line (the service's own pino options and a request-sized line) through each destination, and
// prints {"fd": µs, "pm2": µs, "perLineIpc": µs} on stdout.
//   fd          pino's buffered fd destination, to a file: the path outside PM2 (and, before issue
//               21, inside it, where the lines bypassed PM2's capture)
//   pm2         src/infra/pm2-log.ts: PM2's timestamp prefix, batched file appends and IPC messages
//   perLineIpc  what writing through PM2's own stdout hook costs: per line a timestamp, an IPC
//               message to the daemon and a file write (PM2's ProcessContainer.js does this)
import { createWriteStream, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino, { type DestinationStream } from 'pino';
import { createPm2Destination, formatPm2Date } from '../../src/infra/pm2-log.js';

const iterations = Number(process.argv[2] ?? 20_000);
const dir = mkdtempSync(join(tmpdir(), 'shipshape-log-cost-'));
const format = 'YYYY-MM-DD HH:mm:ss.SSS Z';
const line = {
  requestId: '235a0a08-844c-4e79-8469-e709eed1662a',
  method: 'GET',
  route: '/api/products/:id',
  path: '/api/products/0b7a3b52-2f0e-4b36-9d59-1b8f3c3d9f01',
  status: 200,
  durationMs: 0.91,
};

function perLine(file: string): DestinationStream {
  const out = createWriteStream(file, { flags: 'a' });
  return {
    write(data: string) {
      const stamped = `${formatPm2Date(format, new Date())}: ${data}`;
      process.send?.({ type: 'log:out', data: stamped });
      out.write(stamped);
    },
  };
}

async function time(destination: DestinationStream): Promise<number> {
  const logger = pino(
    { base: { service: 'shipshape', pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime },
    destination,
  );
  const child = logger.child({ requestId: line.requestId });
  for (let i = 0; i < 2000; i++) child.info(line, 'request completed');
  // Yield now and then, like a server between requests, so asynchronous writes make progress.
  const started = performance.now();
  for (let i = 0; i < iterations; i++) {
    child.info(line, 'request completed');
    if (i % 50 === 49) await new Promise((resolve) => setImmediate(resolve));
  }
  return ((performance.now() - started) * 1000) / iterations;
}

const fd = await time(pino.destination({ dest: join(dir, 'fd.log'), sync: false, minLength: 8192 }));
const pm2 = await time(
  createPm2Destination({ files: [join(dir, 'out.log'), join(dir, 'combined.log')], dateFormat: format }),
);
const perLineIpc = await time(perLine(join(dir, 'per-line.log')));
process.stdout.write(`${JSON.stringify({ fd, pm2, perLineIpc })}\n`);
await new Promise((resolve) => setTimeout(resolve, 300));
rmSync(dir, { recursive: true, force: true });
process.exit(0);
