import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFileSync, chownSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { asPostgresUser, asPostgresUserAsync, pgBinDir } from '../../stack/postgres-cluster.js';
import { freePort } from './ports.js';
import { postgresAdminUrl } from './services.js';

const prefix = 'shipshape_test_';

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

let swept = false;

/** Drops databases left behind by test processes that died before cleaning up. */
async function sweepStaleDatabases(admin: pg.Client): Promise<void> {
  if (swept) return;
  swept = true;
  const { rows } = await admin.query<{ datname: string }>(
    'SELECT datname FROM pg_database WHERE datname LIKE $1',
    [`${prefix}%`],
  );
  for (const { datname } of rows) {
    const pid = Number(datname.slice(prefix.length).split('_')[0]);
    if (Number.isInteger(pid) && !isAlive(pid)) {
      await admin.query(`DROP DATABASE IF EXISTS "${datname}" WITH (FORCE)`).catch(() => {});
    }
  }
}

export interface TestDatabase {
  readonly name: string;
  readonly url: string;
  drop(): Promise<void>;
}

/** A fresh, empty database on the machine's PostgreSQL, for one test file or one test. */
export async function createTestDatabase(adminUrl = postgresAdminUrl): Promise<TestDatabase> {
  const name = `${prefix}${process.pid}_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    await sweepStaleDatabases(admin);
    await admin.query(`CREATE DATABASE "${name}"`);
  } finally {
    await admin.end();
  }
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return {
    name,
    url: url.toString(),
    async drop() {
      const client = new pg.Client({ connectionString: adminUrl });
      await client.connect();
      try {
        await client.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      } finally {
        await client.end();
      }
    },
  };
}

export { asPostgresUser, asPostgresUserAsync, pgBinDir } from '../../stack/postgres-cluster.js';

export interface ThrowawayPostgres {
  readonly port: number;
  /** Connection string for the `postgres` database of this instance. */
  readonly url: string;
  /** The data directory, and the temporary directory around it (socket, log). */
  readonly dataDir: string;
  readonly dir: string;
  start(): void;
  /** A fast shutdown: connections are terminated. */
  stop(): void;
  /** An immediate shutdown (a crash, as far as clients can tell), without blocking the event loop. */
  crash(): Promise<void>;
  /** start() without blocking the event loop; resolves when the server accepts connections. */
  restart(): Promise<void>;
  /** Removes the instance and its files. */
  destroy(): void;
}

/**
 * A PostgreSQL server of our own on a free port in a temporary directory, for tests that stop or
 * break the database (the machine's server is never touched).
 */
export async function startThrowawayPostgres(
  settings: {
    /** Lines appended to postgresql.conf before the first start (archiving, hba_file, …). */
    readonly conf?: readonly string[];
  } = {},
): Promise<ThrowawayPostgres> {
  const bin = pgBinDir();
  const dir = mkdtempSync(join(tmpdir(), 'shipshape-pg-'));
  const data = join(dir, 'data');
  if (process.getuid?.() === 0)
    chownSync(dir, Number(execFileSync('id', ['-u', 'postgres']).toString().trim()), 0);
  const init = asPostgresUser(join(bin, 'initdb'), [
    '-D',
    data,
    '-U',
    'postgres',
    '--auth=trust',
    '-E',
    'UTF8',
    '--no-sync',
  ]);
  if (init.status !== 0) throw new Error(`initdb failed:\n${init.output}`);
  if (settings.conf !== undefined && settings.conf.length > 0)
    appendFileSync(join(data, 'postgresql.conf'), `\n${settings.conf.join('\n')}\n`);
  const port = await freePort();
  const options = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off`;
  const pgCtl = (...args: string[]) => asPostgresUser(join(bin, 'pg_ctl'), ['-D', data, ...args]);
  const instance: ThrowawayPostgres = {
    port,
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    dataDir: data,
    dir,
    start() {
      const result = pgCtl('-o', options, '-l', join(dir, 'log'), '-w', '-t', '120', 'start');
      if (result.status !== 0) throw new Error(`pg_ctl start failed:\n${result.output}`);
    },
    stop() {
      pgCtl('-m', 'immediate', '-w', '-t', '120', 'stop');
    },
    async crash() {
      await asPostgresUserAsync(join(bin, 'pg_ctl'), [
        '-D',
        data,
        '-m',
        'immediate',
        '-w',
        '-t',
        '120',
        'stop',
      ]);
    },
    async restart() {
      const result = await asPostgresUserAsync(join(bin, 'pg_ctl'), [
        ...['-D', data, '-o', options, '-l', join(dir, 'log'), '-w', '-t', '120', 'start'],
      ]);
      if (result.status !== 0) throw new Error(`pg_ctl start failed:\n${result.output}`);
    },
    destroy() {
      if (existsSync(join(data, 'postmaster.pid'))) pgCtl('-m', 'immediate', '-w', '-t', '120', 'stop');
      rmSync(dir, { recursive: true, force: true });
    },
  };
  instance.start();
  process.once('exit', () => instance.destroy());
  return instance;
}
