import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { freePort } from './ports.js';

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

async function waitForPing(port: number, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
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
      client.disconnect();
      return;
    } catch {
      client.disconnect();
      await sleep(50);
    }
  }
  throw new Error(`redis-server on port ${port} did not come up`);
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
