import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Component, StackState } from '../types.js';
import { freePort, isAlive, killAndWait, waitFor } from '../util.js';

interface Record {
  port: number;
  dir: string;
  pidFile: string;
}

function pidOf(record: Record): number | null {
  try {
    return Number(readFileSync(record.pidFile, 'utf8').trim());
  } catch {
    return null;
  }
}

/** A redis-server of the stack's own on a free loopback port (in memory only). Publishes REDIS_URL. */
export function redisServer(): Component {
  return {
    name: 'redis',
    async up(ctx) {
      const dir = join(ctx.state.stateDir, 'redis');
      mkdirSync(dir, { recursive: true });
      const port = await freePort();
      const record: Record = { port, dir, pidFile: join(dir, 'redis.pid') };
      ctx.state.components.redis = record;
      ctx.save();
      const child = spawn(
        'redis-server',
        [
          '--port',
          String(port),
          '--bind',
          '127.0.0.1',
          '--save',
          '',
          '--appendonly',
          'no',
          '--daemonize',
          'yes',
          '--pidfile',
          record.pidFile,
          '--dir',
          dir,
          '--logfile',
          join(dir, 'redis.log'),
        ],
        { stdio: 'ignore' },
      );
      const [code] = await once(child, 'exit');
      if (code !== 0) throw new Error(`redis-server exited with ${code} (log: ${join(dir, 'redis.log')})`);
      await waitFor('redis-server to write its pid file', () => isAlive(pidOf(record)), 30_000);
      const url = `redis://127.0.0.1:${port}`;
      ctx.state.redis = { url };
      ctx.appEnv.REDIS_URL = url;
      ctx.log(`redis: ${url}`);
      ctx.save();
    },
    async down(state: StackState, log) {
      const record = state.components.redis as Record | undefined;
      if (record === undefined) return;
      const pid = pidOf(record);
      if (pid !== null && isAlive(pid)) await killAndWait([pid], 'SIGTERM');
      rmSync(record.dir, { recursive: true, force: true });
      log('redis: stopped');
    },
    status: (state) => ({ pid: pidOf(state.components.redis as Record) }),
  };
}

export function redisPids(state: StackState): number[] {
  const record = state.components.redis as Record | undefined;
  const pid = record === undefined ? null : pidOf(record);
  return pid === null ? [] : [pid];
}
