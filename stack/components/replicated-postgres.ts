import { execFile, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { asPostgresUserAsync, chownToPostgres, pgBinDir, pgCtl, queryOnce } from '../postgres-cluster.js';
import type { Component, StackState } from '../types.js';
import { freePort, isAlive } from '../util.js';

const run = promisify(execFile);

/**
 * The scale stage's database (decision 0092): a PostgreSQL primary of the stack's own (initdb in
 * the state directory, a free loopback port) set up as production is — deploy/postgres/roles.sql,
 * database.sql, the shipped pg_hba.conf with loopback for the VPC — migrated as shipshape_owner
 * straight to the primary (the migrator's lock must not go through PgBouncer), and a streaming
 * standby made from it with `pg_basebackup -R` over a replication slot, as shipshape_replication.
 * The app servers read the standby directly as shipshape_app (DATABASE_REPLICA_URLS; decision
 * 0070); PgBouncer (stack/components/pgbouncer.ts) fronts the primary.
 */

export const roles = ['owner', 'app', 'reporting', 'replication', 'monitor'] as const;
export type RoleKey = (typeof roles)[number];
export const roleName = (role: RoleKey) => `shipshape_${role}`;
export const databaseName = 'shipshape';

interface Instance {
  port: number;
  dataDir: string;
  /** Socket directory and log. */
  runDir: string;
  log: string;
}

export interface ReplicationRecord {
  dir: string;
  primary: Instance;
  replicas: Instance[];
  /** Role → its password file (secrets/, mode 0600). */
  passwords: Record<RoleKey, string>;
}

export const replicationRecord = (state: StackState) =>
  state.components.replication as ReplicationRecord | undefined;

export function rolePassword(record: ReplicationRecord, role: RoleKey): string {
  return readFileSync(record.passwords[role], 'utf8');
}

/** A loopback TCP URL for a role (password included: for the app's environment only, never printed). */
export function roleUrl(record: ReplicationRecord, instance: Instance, role: RoleKey): string {
  const url = new URL(`postgres://127.0.0.1:${instance.port}/${databaseName}`);
  url.username = roleName(role);
  url.password = encodeURIComponent(rolePassword(record, role));
  return url.toString();
}

/** The superuser over the instance's own socket (mode 0700: only the stack's user, or root). */
export function socketUrl(instance: Instance, database = databaseName): string {
  return `postgres://postgres@localhost:${instance.port}/${database}?host=${encodeURIComponent(instance.runDir)}`;
}

function postmasterPid(instance: Instance): number | null {
  try {
    const pid = Number(readFileSync(join(instance.dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

export function replicationPids(state: StackState): { expected: number; alive: number[] } {
  const rec = replicationRecord(state);
  if (rec === undefined) return { expected: 0, alive: [] };
  const instances = [rec.primary, ...rec.replicas];
  return {
    expected: instances.length,
    alive: instances.map(postmasterPid).filter((p): p is number => isAlive(p)),
  };
}

const query = queryOnce;

async function psqlFile(url: string, file: string, variables: Record<string, string> = {}) {
  const args = ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', url, '-f', file];
  for (const [name, value] of Object.entries(variables)) args.push('-v', `${name}=${value}`);
  try {
    await run('psql', args, { timeout: 60_000 });
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    throw new Error(`psql -f ${file} failed: ${e.stderr || e.stdout || e.message}`);
  }
}

// Throwaway data: no fsync. Enough connections for every worker an autoscaler may add (the
// standby must allow at least the primary's), and hot_standby_feedback so long replica reads are
// not cancelled by vacuum on the primary.
const settings = (instance: Instance) => [
  `port = ${instance.port}`,
  `listen_addresses = '127.0.0.1'`,
  `unix_socket_directories = '${instance.runDir}'`,
  'unix_socket_permissions = 0700',
  'fsync = off',
  'max_connections = 200',
  'hot_standby_feedback = on',
  `hba_file = '${join(instance.runDir, '..', 'pg_hba.conf')}'`,
];

async function start(instance: Instance): Promise<void> {
  await pgCtl(instance.dataDir, '-l', instance.log, '-w', '-t', '120', 'start');
}

/**
 * The shipped pg_hba.conf for loopback: the VPC range becomes 127.0.0.0/8 (the app servers are
 * 127.0.0.2–4), its `hostssl` lines `host` (the stack's cluster has no server certificate, and its
 * traffic never leaves the machine; test/db/roles.test.ts checks the shipped lines with TLS), and
 * the superuser's `peer` on the socket becomes `trust` (the socket is 0700, and the stack's OS user
 * is not `postgres`).
 */
export function renderHba(root: string): string {
  return readFileSync(join(root, 'deploy', 'postgres', 'pg_hba.conf'), 'utf8')
    .replaceAll('10.20.0.0/20', '127.0.0.0/8')
    .replace(/^hostssl /gm, 'host    ')
    .replace(/^(local\s+all\s+postgres\s+)peer\s*$/m, '$1trust');
}

export function replicatedPostgres(options: { replicas: number }): Component {
  return {
    name: 'replication',
    async up(ctx) {
      const dir = join(ctx.state.stateDir, 'postgres');
      mkdirSync(dir, { recursive: true });
      chownToPostgres(dir);
      const secrets = join(ctx.state.stateDir, 'secrets');
      mkdirSync(secrets, { recursive: true, mode: 0o700 });
      const passwords = {} as Record<RoleKey, string>;
      for (const role of roles) {
        passwords[role] = join(secrets, `postgres-${role}`);
        writeFileSync(passwords[role], randomBytes(24).toString('base64url'), { mode: 0o600 });
      }
      const instance = async (name: string): Promise<Instance> => {
        const runDir = join(dir, name);
        mkdirSync(runDir, { recursive: true });
        chownToPostgres(runDir);
        return { port: await freePort(), dataDir: join(runDir, 'data'), runDir, log: join(runDir, 'log') };
      };
      const rec: ReplicationRecord = { dir, primary: await instance('primary'), replicas: [], passwords };
      ctx.state.components.replication = rec;
      ctx.save();
      for (let i = 1; i <= options.replicas; i++) rec.replicas.push(await instance(`replica-${i}`));
      ctx.save();
      writeFileSync(join(dir, 'pg_hba.conf'), renderHba(ctx.root), { mode: 0o644 });

      const bin = pgBinDir();
      const { primary } = rec;
      const init = await asPostgresUserAsync(join(bin, 'initdb'), [
        ...['-D', primary.dataDir, '-U', 'postgres', '--auth-local=trust', '--auth-host=scram-sha-256'],
        ...['-E', 'UTF8', '--no-sync'],
      ]);
      if (init.status !== 0) throw new Error(`initdb failed:\n${init.output}`);
      appendFileSync(join(primary.dataDir, 'postgresql.conf'), `\n${settings(primary).join('\n')}\n`);
      await start(primary);
      ctx.log(`postgres: primary on 127.0.0.1:${primary.port} (${primary.dataDir})`);

      // The production roles and grants, then the database's owner runs the migrations.
      const variables = Object.fromEntries(roles.map((r) => [`${r}_password`, rolePassword(rec, r)]));
      await psqlFile(
        socketUrl(primary, 'postgres'),
        join(ctx.root, 'deploy', 'postgres', 'roles.sql'),
        variables,
      );
      await query(socketUrl(primary, 'postgres'), `CREATE DATABASE ${databaseName}`);
      await psqlFile(socketUrl(primary), join(ctx.root, 'deploy', 'postgres', 'database.sql'));
      ctx.log('postgres: roles and grants from deploy/postgres/; migrating as shipshape_owner');
      await run(process.execPath, [join(ctx.root, 'dist', 'cli', 'migrate.js')], {
        cwd: ctx.root,
        env: { ...process.env, ...ctx.appEnv, DATABASE_URL: roleUrl(rec, primary, 'owner') },
        timeout: 120_000,
      });

      for (const [i, replica] of rec.replicas.entries()) {
        const slot = `stack_replica_${i + 1}`;
        const backup = await asPostgresUserAsync(
          join(bin, 'pg_basebackup'),
          [
            ...['-h', '127.0.0.1', '-p', String(primary.port), '-U', roleName('replication')],
            ...['-D', replica.dataDir, '-X', 'stream', '-C', '-S', slot, '-R', '--no-sync', '-c', 'fast'],
          ],
          { ...process.env, PGPASSWORD: rolePassword(rec, 'replication') },
        );
        if (backup.status !== 0) throw new Error(`pg_basebackup failed:\n${backup.output}`);
        // The copied postgresql.conf names the primary's port and socket: the replica's own last.
        appendFileSync(join(replica.dataDir, 'postgresql.conf'), `\n${settings(replica).join('\n')}\n`);
        await start(replica);
        ctx.log(`postgres: streaming replica ${i + 1} on 127.0.0.1:${replica.port} (slot ${slot})`);
      }

      ctx.state.databases.push({ role: 'primary', url: socketUrl(primary) });
      for (const replica of rec.replicas)
        ctx.state.databases.push({ role: 'replica', url: socketUrl(replica) });
      // PgBouncer (next) replaces DATABASE_URL; migrations and the tools use the primary directly.
      ctx.appEnv.DATABASE_URL = roleUrl(rec, primary, 'app');
      ctx.appEnv.DATABASE_REPLICA_URLS = rec.replicas.map((r) => roleUrl(rec, r, 'app')).join(',');
      // The deploy's migrations (--deploy-targets): the owner, straight to the primary.
      ctx.appEnv.DATABASE_MIGRATION_URL = roleUrl(rec, primary, 'owner');
      ctx.save();
    },
    async down(state, log) {
      const rec = replicationRecord(state);
      if (rec === undefined) return;
      for (const instance of [...rec.replicas, rec.primary]) {
        if (isAlive(postmasterPid(instance)))
          await pgCtl(instance.dataDir, '-m', 'immediate', '-w', '-t', '120', 'stop');
      }
      if (existsSync(rec.dir)) rmSync(rec.dir, { recursive: true, force: true });
      log('postgres: primary and replicas stopped and removed');
    },
    status(state) {
      const rec = replicationRecord(state);
      if (rec === undefined) return null;
      return {
        primary: { port: rec.primary.port, pid: postmasterPid(rec.primary), url: socketUrl(rec.primary) },
        replicas: rec.replicas.map((r) => ({ port: r.port, pid: postmasterPid(r), url: socketUrl(r) })),
      };
    },
  };
}

/** psql -At synchronously (status is synchronous), rows as arrays of fields; null if it fails. */
export function psqlRows(url: string, sql: string, env: NodeJS.ProcessEnv = {}): string[][] | null {
  const result = spawnSync('psql', ['-X', '-A', '-t', '-F', '\t', '-d', url, '-c', sql], {
    encoding: 'utf8',
    timeout: 5000,
    env: { ...process.env, ...env },
  });
  if (result.status !== 0) return null;
  return result.stdout
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => line.split('\t'));
}

/** psqlRows with the header: one object per row, by column name. */
export function psqlObjects(
  url: string,
  sql: string,
  env: NodeJS.ProcessEnv = {},
): Record<string, string>[] | null {
  const result = spawnSync('psql', ['-X', '-A', '-P', 'footer=off', '-F', '\t', '-d', url, '-c', sql], {
    encoding: 'utf8',
    timeout: 5000,
    env: { ...process.env, ...env },
  });
  if (result.status !== 0) return null;
  const [header, ...lines] = result.stdout.split('\n').filter((line) => line !== '');
  const names = (header ?? '').split('\t');
  return lines.map((line) => {
    const fields = line.split('\t');
    return Object.fromEntries(names.map((name, i) => [name, fields[i] ?? '']));
  });
}

export interface ReplicaHealth {
  /** The replica answers, and is a standby in recovery. */
  readonly up: boolean;
  readonly inRecovery: boolean | null;
  /** pg_get_wal_replay_pause_state(): not paused | pause requested | paused. */
  readonly replay: string | null;
  /** The primary's walsender for its slot: streaming, catchup… (null: not connected). */
  readonly streaming: string | null;
  /** WAL bytes the replica has not replayed yet, as the primary sees it. */
  readonly lagBytes: number | null;
  /** pg_stat_replication.replay_lag in seconds (0 when it has replayed everything). */
  readonly lagSeconds: number | null;
}

/** A replica's replication state and lag, asked of the primary (by slot) and of the replica. */
export function replicaHealth(state: StackState, index: number): ReplicaHealth | null {
  const rec = replicationRecord(state);
  const replica = rec?.replicas[index];
  if (rec === undefined || replica === undefined) return null;
  const own = psqlRows(
    socketUrl(replica),
    "SELECT pg_is_in_recovery(), pg_get_wal_replay_pause_state(), 't'",
  )?.[0];
  const sender = psqlRows(
    socketUrl(rec.primary),
    `SELECT r.state, pg_wal_lsn_diff(pg_current_wal_flush_lsn(), r.replay_lsn),
            coalesce(extract(epoch FROM r.replay_lag), 0)
       FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid
      WHERE s.slot_name = 'stack_replica_${index + 1}'`,
  )?.[0];
  return {
    up: own !== undefined,
    inRecovery: own === undefined ? null : own[0] === 't',
    replay: own?.[1] ?? null,
    streaming: sender?.[0] ?? null,
    lagBytes: sender === undefined ? null : Math.max(0, Number(sender[1])),
    lagSeconds: sender === undefined ? null : Number(sender[2]),
  };
}
