import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { chownSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import {
  pgbouncerBinary,
  renderPgbouncerHba,
  renderPgbouncerIni,
  userlistLine,
} from '../../src/ops/pgbouncer.js';
import { freePort } from './ports.js';
import { waitUntil } from './wait.js';

export interface PgbouncerUser {
  readonly name: string;
  readonly password: string;
}

export interface RunningPgbouncer {
  readonly port: number;
  /** Connection string through PgBouncer for a user (by name) and database. */
  url(user: string, database: string): string;
  /** A query on the admin console (`SHOW POOLS`, `SHOW CONFIG`…), as the admin user. */
  admin<T extends pg.QueryResultRow>(command: string): Promise<T[]>;
  readonly config: string;
  log(): string;
  /** Stops the process at once (SIGTERM: PgBouncer's immediate shutdown); the files stay for `start`. */
  kill(): Promise<void>;
  /** Starts it again on the same port with the same files, after `kill`; resolves once it accepts. */
  start(): Promise<void>;
  stop(): Promise<void>;
}

export { pgbouncerBinary };

/**
 * The real PgBouncer with the shipped deploy/pgbouncer/ files, rendered for loopback: listening on
 * a free port, in a temporary directory, in front of `upstream` (every database name passes
 * through to it). Users authenticate with SCRAM against a userlist of plain passwords (PgBouncer
 * derives the SCRAM exchange from them); the first user is the admin.
 */
export async function startPgbouncer(options: {
  readonly upstream: { readonly host: string; readonly port: number };
  readonly users: readonly PgbouncerUser[];
  /** [databases] entries instead of `*` passing every name through to upstream. */
  readonly databases?: Readonly<Record<string, string>>;
}): Promise<RunningPgbouncer> {
  const binary = pgbouncerBinary();
  if (binary === undefined) throw new Error('pgbouncer is not installed: scripts/install-ops-tools.sh');
  const dir = mkdtempSync(join(tmpdir(), 'shipshape-pgbouncer-'));
  const port = await freePort();
  const admin = options.users[0];
  if (admin === undefined) throw new Error('startPgbouncer needs at least one user');
  const config = join(dir, 'pgbouncer.ini');
  writeFileSync(
    config,
    renderPgbouncerIni({
      databases: options.databases ?? { '*': `host=${options.upstream.host} port=${options.upstream.port}` },
      settings: {
        listen_addr: '127.0.0.1',
        listen_port: String(port),
        unix_socket_dir: '',
        logfile: join(dir, 'pgbouncer.log'),
        pidfile: join(dir, 'pgbouncer.pid'),
        auth_hba_file: join(dir, 'pgbouncer-hba.conf'),
        auth_file: join(dir, 'userlist.txt'),
        admin_users: admin.name,
        stats_users: admin.name,
      },
    }),
  );
  // Test databases have names of their own; the shipped rules' users, addresses and methods stay.
  const hba = renderPgbouncerHba('127.0.0.0/8').replace(/^(host\s+)shipshape(\s)/gm, '$1all$2');
  writeFileSync(
    join(dir, 'pgbouncer-hba.conf'),
    `${hba}host    pgbouncer  ${admin.name}  127.0.0.1/32  scram-sha-256\n`,
  );
  writeFileSync(
    join(dir, 'userlist.txt'),
    `${options.users.map((u) => userlistLine(u.name, u.password)).join('\n')}\n`,
  );
  // PgBouncer refuses to run as root: it switches to the postgres user, which must read the files.
  const asRoot = process.getuid?.() === 0;
  if (asRoot) {
    const uid = Number(execFileSync('id', ['-u', 'postgres']).toString().trim());
    for (const file of ['', 'pgbouncer.ini', 'pgbouncer-hba.conf', 'userlist.txt'])
      chownSync(join(dir, file), uid, 0);
  }
  let stderr = '';
  let exited = false;
  let child: ChildProcess;
  let exit: Promise<void>;
  const spawnIt = () => {
    child = spawn(binary, [...(asRoot ? ['-u', 'postgres'] : []), config], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    child.stderr?.on('data', (chunk) => {
      stderr += chunk;
    });
    exited = false;
    exit = once(child, 'exit').then(() => {
      exited = true;
    });
  };
  spawnIt();
  const log = () => {
    try {
      return `${readFileSync(join(dir, 'pgbouncer.log'), 'utf8')}${stderr}`;
    } catch {
      return stderr;
    }
  };
  const url = (user: string, database: string) => {
    const password = options.users.find((u) => u.name === user)?.password ?? '';
    return `postgres://${encodeURIComponent(user)}:${encodeURIComponent(password)}@127.0.0.1:${port}/${database}`;
  };
  const halt = async (signal: NodeJS.Signals) => {
    if (exited) return;
    child.kill(signal);
    const killer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exit;
    clearTimeout(killer);
  };
  const stop = async () => {
    await halt('SIGINT');
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', () => {
    if (!exited) child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });
  const adminQuery = async <T extends pg.QueryResultRow>(command: string): Promise<T[]> => {
    const client = new pg.Client({ connectionString: url(admin.name, 'pgbouncer') });
    await client.connect();
    try {
      // The admin console speaks only the simple protocol: no parameters.
      return (await client.query<T>(command)).rows;
    } finally {
      await client.end();
    }
  };
  const accepting = () =>
    waitUntil(
      async () => {
        if (exited) throw new Error(`pgbouncer exited:\n${log()}`);
        await adminQuery('SHOW VERSION');
        return true;
      },
      { timeoutMs: 60_000, intervalMs: 100, what: 'pgbouncer accepting connections' },
    );
  try {
    await accepting();
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    port,
    url,
    admin: adminQuery,
    config,
    log,
    kill: () => halt('SIGTERM'),
    async start() {
      if (!exited) throw new Error('pgbouncer is running: kill it first');
      spawnIt();
      await accepting();
    },
    stop,
  };
}
