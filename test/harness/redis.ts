import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { Redis } from 'ioredis';
import { freePort } from './ports.js';
import { waitUntil } from './wait.js';

export interface ThrowawayRedis {
  readonly port: number;
  readonly url: string;
  start(): Promise<void>;
  /** Stops the server; its (in-memory) data is gone. */
  stop(): Promise<void>;
  /** SIGSTOP: the server holds connections but answers nothing, like a hung or overloaded one. */
  pause(): void;
  resume(): void;
  destroy(): Promise<void>;
}

/** Waits until the server answers PING (generous: a loaded machine starts processes slowly). */
function waitForPing(port: number): Promise<void> {
  return waitUntil(
    async () => {
      const client = new Redis({
        port,
        host: '127.0.0.1',
        lazyConnect: true,
        maxRetriesPerRequest: 0,
        retryStrategy: () => null,
      });
      client.on('error', () => {});
      try {
        await client.connect();
        await client.ping();
        return true;
      } finally {
        client.disconnect();
      }
    },
    { what: `redis-server on port ${port} answering PING` },
  );
}

/** A redis-server of our own on a free port, for tests that stop, pause or restart Redis. */
export async function startThrowawayRedis(): Promise<ThrowawayRedis> {
  const port = await freePort();
  let child: ChildProcess | undefined;
  const instance: ThrowawayRedis = {
    port,
    url: `redis://127.0.0.1:${port}`,
    async start() {
      child = spawn(
        'redis-server',
        ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
        {
          stdio: 'ignore',
        },
      );
      await waitForPing(port);
    },
    async stop() {
      const running = child;
      child = undefined;
      if (running === undefined || running.exitCode !== null) return;
      running.kill('SIGCONT');
      running.kill('SIGKILL');
      await once(running, 'exit');
    },
    pause() {
      child?.kill('SIGSTOP');
    },
    resume() {
      child?.kill('SIGCONT');
    },
    destroy: () => instance.stop(),
  };
  await instance.start();
  process.once('exit', () => {
    child?.kill('SIGKILL');
  });
  return instance;
}
