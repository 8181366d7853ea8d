import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { startServerProcess } from './harness/process.js';

const fixture = new URL('./fixtures/server.ts', import.meta.url).pathname;
const mainEntry = new URL('../src/main.ts', import.meta.url).pathname;

/** Each server's SQLite directory, removed after the file. */
const dirs: string[] = [];
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function sqliteEnv(): Record<string, string> {
  const dir = mkdtempSync(join(tmpdir(), 'shipshape-shutdown-'));
  dirs.push(dir);
  return { SQLITE_PATH: join(dir, 'db.sqlite') };
}

interface Answer {
  status: number;
  body: string;
  connection: string | undefined;
}

function get(port: number, path: string, agent?: Agent): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, agent: agent ?? false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => {
        body += chunk;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, connection: res.headers.connection }));
    });
    req.on('error', (err: NodeJS.ErrnoException & { reusedSocket?: boolean }) => {
      err.reusedSocket = req.reusedSocket;
      reject(err);
    });
    req.end();
  });
}

describe('graceful shutdown of the real process', () => {
  test('SIGTERM during a request: readiness fails, the request completes, the process exits 0', async () => {
    const server = await startServerProcess(fixture, {
      ...sqliteEnv(),
      SHUTDOWN_GRACE_MS: '500',
      SHUTDOWN_TIMEOUT_MS: '10000',
    });
    const inFlight = get(server.port, '/test/slow?ms=1500');
    await sleep(300);
    server.child.kill('SIGTERM');
    await sleep(100);
    const ready = await get(server.port, '/ready');
    assert.equal(ready.status, 503, 'readiness fails as soon as draining starts');
    assert.equal(ready.connection, 'close');
    const slow = await inFlight;
    assert.equal(slow.status, 200);
    assert.deepEqual(JSON.parse(slow.body), { done: true, ms: 1500 });
    assert.equal(await server.exited(), 0);
    assert.ok(server.logs.some((l) => l.msg === 'shutdown complete'));
    await assert.rejects(get(server.port, '/health'), /ECONNREFUSED/);
  });

  test('a keep-alive client hammering through shutdown never sees a reset on a kept-alive socket', async () => {
    const server = await startServerProcess(fixture, { ...sqliteEnv(), SHUTDOWN_GRACE_MS: '400' });
    const agent = new Agent({ keepAlive: true, maxSockets: 4 });
    const failures: string[] = [];
    let ok = 0;
    let reused = 0;
    let refused = 0;
    const worker = async () => {
      for (;;) {
        try {
          const res = await get(server.port, '/health', agent);
          if (res.status === 200) ok++;
          else failures.push(`status ${res.status}`);
        } catch (err) {
          const error = err as NodeJS.ErrnoException & { reusedSocket?: boolean };
          if (error.reusedSocket) {
            reused++;
            failures.push(`${error.code} on a kept-alive socket`);
            continue;
          }
          // A brand-new connection once the listener is closing: refused (or reset from the
          // accept backlog). Standalone, nobody else can take it; under PM2 the master hands it to
          // another worker, and behind nginx it is retried upstream.
          refused++;
          return;
        }
      }
    };
    const workers = Array.from({ length: 4 }, worker);
    await sleep(300);
    server.child.kill('SIGTERM');
    const code = await server.exited();
    await Promise.all(workers);
    agent.destroy();
    assert.equal(code, 0);
    assert.ok(ok > 20, `requests answered: ${ok}`);
    assert.equal(refused, 4, 'each client stops only when new connections are refused');
    assert.deepEqual(failures, [], `no errors on kept-alive sockets (${reused})`);
  });

  test('the drain timeout forces exit 1 when a request will not finish', async () => {
    const server = await startServerProcess(fixture, {
      ...sqliteEnv(),
      SHUTDOWN_GRACE_MS: '100',
      SHUTDOWN_TIMEOUT_MS: '800',
    });
    get(server.port, '/test/slow?ms=10000').catch(() => {});
    await sleep(200);
    const started = Date.now();
    server.child.kill('SIGTERM');
    assert.equal(await server.exited(), 1);
    const took = Date.now() - started;
    assert.ok(took >= 700 && took < 3000, `exited after ${took} ms`);
  });

  test('a second signal forces exit 1 at once', async () => {
    const server = await startServerProcess(fixture, { ...sqliteEnv(), SHUTDOWN_GRACE_MS: '5000' });
    server.child.kill('SIGTERM');
    await sleep(200);
    server.child.kill('SIGINT');
    assert.equal(await server.exited(), 1);
  });
});

describe('start-up', () => {
  test('a bad configuration stops start-up with a message naming the variable', () => {
    const result = spawnSync(process.execPath, ['--import', 'tsx', mainEntry], {
      env: { ...process.env, PORT: 'eighty', CORS_ORIGINS: 'null' },
      encoding: 'utf8',
      timeout: 120_000,
    });
    assert.equal(result.status, 1);
    assert.match(result.stderr, /PORT must be an integer/);
    assert.match(result.stderr, /CORS_ORIGINS must not contain "null"/);
  });
});
