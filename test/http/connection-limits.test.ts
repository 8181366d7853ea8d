import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { type ServerProcess, startServerProcess } from '../harness/process.js';

/**
 * Security probe 2026-12-02, finding 3, against the real process: slow clients are cut off within
 * their timeout plus the check interval (Node's default interval of 30 s let them stay 40 s), and a
 * connection flood above MAX_CONNECTIONS leaves the process serving its existing connections,
 * logging the limit, and serving new ones as soon as the flood stops.
 */

const mainEntry = new URL('../../src/main.ts', import.meta.url).pathname;
const headersTimeoutMs = 2000;
const requestTimeoutMs = 3000;
const checkIntervalMs = 500;
const maxConnections = 40;
/** Slack for a loaded machine; still far below the 30 s the old check interval allowed. */
const slackMs = 6000;

/**
 * A connected socket, or a rejection after `timeoutMs`: with the listen backlog full, a loopback
 * connect can wait minutes for SYN retries, and an attacker loop must never hang the test.
 */
function openSocket(port: number, timeoutMs = 5000): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port }, () => {
      clearTimeout(timer);
      resolve(socket);
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('connect timed out'));
    }, timeoutMs);
  });
}

/** Opens a socket, feeds it with `feed`, and resolves with when it was closed and what it got. */
async function heldUntilClosed(port: number, feed: (socket: Socket) => void) {
  const socket = await openSocket(port);
  const started = performance.now();
  let received = '';
  socket.on('data', (chunk) => {
    received += chunk;
  });
  socket.on('error', () => {});
  feed(socket);
  await new Promise((resolve) => socket.once('close', resolve));
  return { afterMs: performance.now() - started, received };
}

function drip(socket: Socket, text: string, everyMs: number): void {
  let i = 0;
  const timer = setInterval(() => {
    if (socket.destroyed || i >= text.length) return clearInterval(timer);
    socket.write(text[i++] ?? '');
  }, everyMs);
  socket.once('close', () => clearInterval(timer));
}

function get(port: number, path: string, agent: Agent | false = false): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, agent }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    // Bounded: a request that met a flooded listener fails (and is retried by the caller) instead
    // of hanging the test.
    req.setTimeout(20_000, () => req.destroy(new Error(`GET ${path} timed out`)));
    req.end();
  });
}

describe('connection limits of the real process', () => {
  let server: ServerProcess;
  let dir: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'shipshape-connections-'));
    server = await startServerProcess(mainEntry, {
      SQLITE_PATH: join(dir, 'db.sqlite'),
      HEADERS_TIMEOUT_MS: String(headersTimeoutMs),
      REQUEST_TIMEOUT_MS: String(requestTimeoutMs),
      CONNECTIONS_CHECK_INTERVAL_MS: String(checkIntervalMs),
      MAX_CONNECTIONS: String(maxConnections),
      SHUTDOWN_GRACE_MS: '0',
    });
  });
  after(async () => {
    if (server !== undefined && server.child.exitCode === null) {
      server.child.kill('SIGTERM');
      await server.exited();
    }
    rmSync(dir, { recursive: true, force: true });
  });

  test('slow clients are cut off within their timeout plus the check interval', async () => {
    const [idle, headerDrip, bodyDrip] = await Promise.all([
      heldUntilClosed(server.port, () => {}),
      heldUntilClosed(server.port, (s) =>
        drip(s, 'GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaa', 200),
      ),
      heldUntilClosed(server.port, (s) => {
        s.write(
          'POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n',
        );
        drip(s, '{"login":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 200);
      }),
    ]);
    for (const [what, result, limitMs] of [
      ['idle socket', idle, headersTimeoutMs],
      ['header drip', headerDrip, headersTimeoutMs],
      ['body drip', bodyDrip, requestTimeoutMs],
    ] as const) {
      console.log(`${what}: closed after ${result.afterMs.toFixed(0)} ms (limit ${limitMs} ms)`);
      assert.ok(result.afterMs >= limitMs - 100, `${what}: not cut off before its limit`);
      assert.ok(
        result.afterMs <= limitMs + checkIntervalMs + slackMs,
        `${what}: cut off ${result.afterMs.toFixed(0)} ms after it opened`,
      );
    }
    assert.match(headerDrip.received, /^HTTP\/1\.1 408/, 'a request that started gets 408');
    assert.match(bodyDrip.received, /^HTTP\/1\.1 408/);
  });

  test('a connection flood above the cap: existing clients served, a warning logged, new ones served once it stops', async () => {
    const keepAlive = new Agent({ keepAlive: true, maxSockets: 1 });
    // The flood: twice the cap of half-open requests, each reopened as the server closes it.
    let flooding = true;
    const open = new Set<Socket>();
    const attacker = async () => {
      while (flooding) {
        const socket = await openSocket(server.port).catch(() => undefined);
        if (socket === undefined) {
          await sleep(10);
          continue;
        }
        open.add(socket);
        socket.on('error', () => {});
        socket.write('GET /health HTTP/1.1\r\nHost: x\r\nX-A: ');
        if (!flooding) socket.destroy();
        await new Promise((resolve) => socket.once('close', resolve));
        open.delete(socket);
      }
    };
    let attackers: Promise<void>[] = [];
    const stopFlood = async () => {
      flooding = false;
      for (const socket of open) socket.destroy();
      await Promise.all(attackers);
    };
    try {
      assert.equal(await get(server.port, '/health', keepAlive), 200, 'a client connected before the flood');
      attackers = Array.from({ length: maxConnections * 2 }, attacker);
      const deadline = performance.now() + 30_000;
      while (!server.logs.some((l) => l.event === 'connection_limit_reached')) {
        assert.ok(performance.now() < deadline, 'the connection limit is logged');
        await sleep(50);
      }
      for (let i = 0; i < 5; i++) {
        assert.equal(
          await get(server.port, '/health', keepAlive),
          200,
          'the existing client is still served',
        );
      }
      await stopFlood();
      assert.equal(server.child.exitCode, null, 'the process is alive');
      // Recovered: a new connection is served (the first tries may still meet the last of the flood).
      const recoveryDeadline = performance.now() + 10_000;
      for (;;) {
        const status = await get(server.port, '/ready').catch(() => 0);
        if (status === 200) break;
        assert.ok(performance.now() < recoveryDeadline, 'new clients are served after the flood');
        await sleep(50);
      }
    } finally {
      await stopFlood();
      keepAlive.destroy();
    }
  });
});
