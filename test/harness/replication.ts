import { execFileSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { queryOnce } from '../../stack/postgres-cluster.js';
import { freePort } from './ports.js';
import { asPostgresUser, pgBinDir, startThrowawayPostgres, type ThrowawayPostgres } from './postgres.js';

export interface Standby {
  readonly port: number;
  /** Connection string for a database of the standby (`postgres` unless named). */
  url(database?: string): string;
  start(): void;
  /** An immediate shutdown: the server is gone at once, as in a crash. */
  kill(): void;
  readonly running: boolean;
}

export interface ReplicatedPostgres {
  readonly primary: ThrowawayPostgres;
  readonly standby: Standby;
  /** Connection string for a database of the primary. */
  primaryUrl(database?: string): string;
  /** Stops applying WAL on the standby (it still receives it): every later write is missing there. */
  pauseReplay(): Promise<void>;
  resumeReplay(): Promise<void>;
  /** Waits (generously) until the standby has replayed everything the primary has written so far. */
  waitForCatchUp(timeoutMs?: number): Promise<void>;
  destroy(): void;
}

const query = queryOnce;

/**
 * A primary and a streaming standby of our own (initdb, then `pg_basebackup -R` with a replication
 * slot, so a standby that was killed and restarted finds all the WAL it missed), on free loopback
 * ports in temporary directories. The machine's PostgreSQL is never involved.
 */
export async function startReplicatedPostgres(): Promise<ReplicatedPostgres> {
  const primary = await startThrowawayPostgres();
  const bin = pgBinDir();
  const dir = mkdtempSync(join(tmpdir(), 'shipshape-standby-'));
  const data = join(dir, 'data');
  if (process.getuid?.() === 0)
    chownSync(dir, Number(execFileSync('id', ['-u', 'postgres']).toString().trim()), 0);
  const backup = asPostgresUser(join(bin, 'pg_basebackup'), [
    ...['-h', '127.0.0.1', '-p', String(primary.port), '-U', 'postgres'],
    ...['-D', data, '-X', 'stream', '-C', '-S', 'standby1', '-R', '--no-sync', '-c', 'fast'],
  ]);
  if (backup.status !== 0) {
    primary.destroy();
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`pg_basebackup failed:\n${backup.output}`);
  }
  const port = await freePort();
  const options = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off`;
  const pgCtl = (...args: string[]) => asPostgresUser(join(bin, 'pg_ctl'), ['-D', data, ...args]);
  let running = false;
  const standby: Standby = {
    port,
    url: (database = 'postgres') => `postgres://postgres@127.0.0.1:${port}/${database}`,
    start() {
      const result = pgCtl('-o', options, '-l', join(dir, 'log'), '-w', '-t', '60', 'start');
      if (result.status !== 0) throw new Error(`standby start failed:\n${result.output}`);
      running = true;
    },
    kill() {
      pgCtl('-m', 'immediate', '-w', 'stop');
      running = false;
    },
    get running() {
      return running;
    },
  };
  const primaryUrl = (database = 'postgres') => `postgres://postgres@127.0.0.1:${primary.port}/${database}`;
  const cluster: ReplicatedPostgres = {
    primary,
    standby,
    primaryUrl,
    async pauseReplay() {
      await query(standby.url(), 'SELECT pg_wal_replay_pause()');
      // Pausing is requested, then takes effect: wait until replay has really stopped.
      const deadline = Date.now() + 30_000;
      while (Date.now() < deadline) {
        const [row] = await query<{ state: string }>(
          standby.url(),
          'SELECT pg_get_wal_replay_pause_state() AS state',
        );
        if (row?.state === 'paused') return;
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      throw new Error('standby replay did not pause within 30 s');
    },
    async resumeReplay() {
      await query(standby.url(), 'SELECT pg_wal_replay_resume()');
    },
    async waitForCatchUp(timeoutMs = 60_000) {
      // The flush position: the insert position may sit past a page header no record has reached yet.
      const [target] = await query<{ lsn: string }>(
        primaryUrl(),
        'SELECT pg_current_wal_flush_lsn()::text AS lsn',
      );
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline) {
        const [row] = await query<{ done: boolean }>(
          standby.url(),
          `SELECT pg_last_wal_replay_lsn() >= '${target?.lsn}'::pg_lsn AS done`,
        );
        if (row?.done) return;
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      throw new Error(`standby did not replay ${target?.lsn} within ${timeoutMs} ms`);
    },
    destroy() {
      if (existsSync(join(data, 'postmaster.pid'))) pgCtl('-m', 'immediate', '-w', 'stop');
      rmSync(dir, { recursive: true, force: true });
      primary.destroy();
    },
  };
  process.once('exit', () => cluster.destroy());
  standby.start();
  return cluster;
}
