import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { type FaultProxy, startFaultProxy } from '../harness/fault-proxy.js';

/** An echo server: every byte comes back. */
async function echoServer(): Promise<{ server: Server; port: number }> {
  const server = createServer((socket) => {
    socket.on('error', () => {});
    socket.pipe(socket);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as { port: number }).port };
}

interface Client {
  readonly socket: Socket;
  readonly received: () => Buffer;
  readonly chunks: () => number;
  /** Resolves with how the connection ended: 'end', 'reset' or another error code. */
  readonly ended: Promise<string>;
}

async function client(port: number): Promise<Client> {
  const socket = connect({ host: '127.0.0.1', port });
  await once(socket, 'connect');
  const parts: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => parts.push(chunk));
  const ended = new Promise<string>((resolve) => {
    socket.on('error', (err: NodeJS.ErrnoException) =>
      resolve(err.code === 'ECONNRESET' ? 'reset' : String(err.code)),
    );
    socket.on('end', () => resolve('end'));
    socket.on('close', () => resolve('close'));
  });
  return { socket, received: () => Buffer.concat(parts), chunks: () => parts.length, ended };
}

/** Waits (generously) until `n` bytes came back; returns how long that took. */
async function until(c: Client, n: number, timeoutMs = 30_000): Promise<number> {
  const started = Date.now();
  while (c.received().length < n) {
    if (Date.now() - started > timeoutMs) throw new Error(`only ${c.received().length} of ${n} bytes`);
    await sleep(5);
  }
  return Date.now() - started;
}

describe('fault proxy (Toxiproxy fault types, in Node)', () => {
  let echo: { server: Server; port: number };
  let proxy: FaultProxy;
  const open: Socket[] = [];

  before(async () => {
    echo = await echoServer();
    proxy = await startFaultProxy({ name: 'echo', target: { port: echo.port } });
  });
  after(async () => {
    for (const s of open) s.destroy();
    await proxy.close();
    echo.server.close();
  });

  async function fresh(): Promise<Client> {
    proxy.clear();
    const c = await client(proxy.port);
    open.push(c.socket);
    return c;
  }

  test('without toxics, a megabyte goes through both ways unchanged', async () => {
    const c = await fresh();
    const payload = randomBytes(1024 * 1024);
    c.socket.write(payload);
    await until(c, payload.length);
    assert.ok(c.received().equals(payload));
    assert.ok(proxy.stats().bytes.upstream >= payload.length);
    c.socket.destroy();
  });

  test('latency with jitter delays each direction, and applies to a connection already open', async () => {
    const c = await fresh();
    c.socket.write('a');
    const plain = await until(c, 1);
    const toxic = proxy.add({ type: 'latency', latencyMs: 300, jitterMs: 50 });
    c.socket.write('b');
    const slow = await until(c, 2);
    assert.ok(slow >= 240, `downstream latency: ${slow} ms (no toxic: ${plain} ms)`);
    proxy.remove(toxic);
    proxy.add({ type: 'latency', latencyMs: 300 }, 'upstream');
    c.socket.write('c');
    assert.ok((await until(c, 3)) >= 290, 'upstream latency');
    assert.equal(c.received().toString(), 'abc', 'order kept');
    c.socket.destroy();
  });

  test('down: open connections are closed, new ones refused; up: served again on the same port', async () => {
    const c = await fresh();
    await proxy.down();
    assert.notEqual(await c.ended, 'open');
    const refused = connect({ host: '127.0.0.1', port: proxy.port });
    const [err] = (await once(refused, 'error').catch((e) => [e])) as [NodeJS.ErrnoException];
    assert.equal(err.code, 'ECONNREFUSED');
    await proxy.up();
    const again = await fresh();
    again.socket.write('x');
    await until(again, 1);
    again.socket.destroy();
  });

  test('timeout 0: accepted and silent (a hung peer); timeout > 0: closed after it', async () => {
    const hung = await fresh();
    proxy.add({ type: 'timeout' });
    hung.socket.write('nothing comes back');
    await sleep(500);
    assert.equal(hung.received().length, 0);
    assert.equal(hung.socket.destroyed, false, 'the connection stays open');
    hung.socket.destroy();

    proxy.clear();
    const closing = await client(proxy.port);
    open.push(closing.socket);
    const started = Date.now();
    proxy.add({ type: 'timeout', timeoutMs: 300 });
    closing.socket.write('dropped');
    await closing.ended;
    const took = Date.now() - started;
    assert.ok(took >= 290, `closed after ${took} ms`);
    assert.equal(closing.received().length, 0);
  });

  test('reset_peer: the client sees ECONNRESET after the timeout', async () => {
    const c = await fresh();
    proxy.add({ type: 'reset_peer', timeoutMs: 200 });
    assert.equal(await c.ended, 'reset');
  });

  test('bandwidth: 96 KiB at 64 KiB/s takes about 1.5 s', async () => {
    const c = await fresh();
    proxy.add({ type: 'bandwidth', rateKBps: 64 });
    c.socket.write(randomBytes(96 * 1024));
    const took = await until(c, 96 * 1024);
    assert.ok(took >= 1300, `took ${took} ms`);
    c.socket.destroy();
  });

  test('slicer: the bytes arrive unchanged, in many small pieces', async () => {
    const c = await fresh();
    proxy.add({ type: 'slicer', averageSize: 10, sizeVariation: 5, delayUs: 1000 });
    const payload = randomBytes(2000);
    c.socket.write(payload);
    await until(c, payload.length);
    assert.ok(c.received().equals(payload));
    assert.ok(c.chunks() >= 50, `${c.chunks()} pieces`);
    c.socket.destroy();
  });

  test('limit_data: exactly that many bytes pass, then the connection is closed', async () => {
    const c = await fresh();
    proxy.add({ type: 'limit_data', bytes: 1000 });
    c.socket.write(randomBytes(3000));
    await c.ended;
    assert.equal(c.received().length, 1000);
  });

  test('cutAll closes open connections and keeps accepting; retarget moves new ones', async () => {
    const c = await fresh();
    proxy.cutAll();
    await c.ended;
    const other = await echoServer();
    try {
      proxy.retarget({ port: other.port });
      const moved = await fresh();
      moved.socket.write('y');
      await until(moved, 1);
      moved.socket.destroy();
    } finally {
      proxy.retarget({ port: echo.port });
      other.server.close();
    }
  });
  test('a dependency that answers and closes at once: a sliced answer still arrives whole, then an orderly end', async () => {
    const payload = randomBytes(4096);
    // As a keep-alive server retiring a socket: its last answer, then FIN straight away.
    const server = createServer((socket) => {
      socket.on('error', () => {});
      socket.end(payload);
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const sliced = await startFaultProxy({
      name: 'closing',
      target: { port: (server.address() as { port: number }).port },
    });
    try {
      // 4 KiB in ~64-byte slices 2 ms apart: delivery outlasts the server's close by far.
      sliced.add({ type: 'slicer', averageSize: 64, sizeVariation: 16, delayUs: 2000 });
      const c = await client(sliced.port);
      open.push(c.socket);
      assert.equal(await c.ended, 'end');
      assert.ok(c.received().equals(payload), `${c.received().length} of ${payload.length} bytes`);
      assert.ok(c.chunks() > 20, `${c.chunks()} pieces`);
    } finally {
      await sliced.close();
      server.close();
    }
  });
});
