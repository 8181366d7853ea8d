import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { chownSync } from 'node:fs';
import pg from 'pg';

/**
 * PostgreSQL server clusters of our own (initdb, pg_ctl, pg_basebackup), shared by `npm run stack`
 * (the scale stage's primary and streaming replica) and the test harness (test/harness/postgres.ts,
 * replication.ts). Debian's server binaries; run as the postgres user when we are root, because
 * initdb and postgres refuse to run as root.
 */

export function pgBinDir(): string {
  try {
    return execFileSync('pg_config', ['--bindir'], { encoding: 'utf8' }).trim();
  } catch {
    return '/usr/lib/postgresql/15/bin';
  }
}

/** The postgres user's uid when we are root (files it must own), else null (we run it ourselves). */
export function postgresUid(): number | null {
  if (process.getuid?.() !== 0) return null;
  return Number(execFileSync('id', ['-u', 'postgres']).toString().trim());
}

/** Gives a directory (or file) to the postgres user when we are root; a no-op otherwise. */
export function chownToPostgres(path: string): void {
  const uid = postgresUid();
  if (uid !== null) chownSync(path, uid, 0);
}

function asPostgres(command: string, args: string[]): [string, string[]] {
  return process.getuid?.() === 0 ? ['runuser', ['-u', 'postgres', '--', command, ...args]] : [command, args];
}

/** initdb and postgres refuse to run as root: run them as the postgres user when we are root. */
export function asPostgresUser(command: string, args: string[]): { status: number | null; output: string } {
  const [file, argv] = asPostgres(command, args);
  const result = spawnSync(file, argv, { encoding: 'utf8' });
  return { status: result.status, output: `${result.stdout ?? ''}${result.stderr ?? ''}` };
}

/** asPostgresUser without blocking the event loop (load generators and fault proxies keep running). */
export function asPostgresUserAsync(
  command: string,
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<{ status: number | null; output: string }> {
  const [file, argv] = asPostgres(command, args);
  return new Promise((resolve) => {
    execFile(file, argv, { encoding: 'utf8', timeout: 180_000, env }, (err, stdout, stderr) => {
      const status = err === null ? 0 : typeof err.code === 'number' ? err.code : 1;
      resolve({ status, output: `${stdout ?? ''}${stderr ?? ''}` });
    });
  });
}

/** `pg_ctl` on a data directory, as the postgres user; throws with its output on failure. */
export async function pgCtl(dataDir: string, ...args: string[]): Promise<void> {
  const result = await asPostgresUserAsync(`${pgBinDir()}/pg_ctl`, ['-D', dataDir, ...args]);
  if (result.status !== 0) throw new Error(`pg_ctl ${args.at(-1)} failed:\n${result.output}`);
}

/** One query on a connection of its own, closed after. */
export async function queryOnce<T extends pg.QueryResultRow>(url: string, text: string): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  // A server killed under this client (failover tests) ends its socket; the query rejects, and
  // the client's 'error' event must not become an uncaught error.
  client.on('error', () => {});
  await client.connect();
  try {
    return (await client.query<T>(text)).rows;
  } finally {
    await client.end();
  }
}
