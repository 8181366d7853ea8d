import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import {
  pgbouncerBinary,
  renderPgbouncerHba,
  renderPgbouncerIni,
  userlistLine,
} from '../../src/ops/pgbouncer.js';
import { chownToPostgres } from '../postgres-cluster.js';
import type { Component, StackState } from '../types.js';
import { freePort, GiveUp, isAlive, killAndWait, waitFor } from '../util.js';
import {
  databaseName,
  psqlObjects,
  psqlRows,
  replicationRecord,
  roleName,
  rolePassword,
  socketUrl,
} from './replicated-postgres.js';

const run = promisify(execFile);

/**
 * The scale stage's PgBouncer (Debian 12's 1.18): the shipped deploy/pgbouncer/ files rendered for
 * loopback (src/ops/pgbouncer.ts changes only hosts, ports, paths and the database entry, never
 * the pooling settings: transaction mode), in front of the stack's primary. Its userlist holds the
 * roles' SCRAM secrets read from pg_authid, as the shipped file says: no plain password on disk.
 * The app servers' DATABASE_URL becomes shipshape_app through it; the stats user
 * (shipshape_monitor) reads SHOW POOLS / SHOW CLIENTS on its console, and `status --json` shows them.
 */

interface PgbouncerRecord {
  dir: string;
  port: number;
  config: string;
  pidFile: string;
  log: string;
}

const record = (state: StackState) => state.components.pgbouncer as PgbouncerRecord | undefined;

function pidOf(rec: PgbouncerRecord): number | null {
  try {
    const pid = Number(readFileSync(rec.pidFile, 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

export function pgbouncerPids(state: StackState): { expected: number; alive: number[] } {
  const rec = record(state);
  if (rec === undefined) return { expected: 0, alive: [] };
  const pid = pidOf(rec);
  return { expected: 1, alive: isAlive(pid) ? [pid as number] : [] };
}

/** The admin console as the stats user (its password stays in secrets/, out of the URL). */
export function pgbouncerConsoleUrl(state: StackState): string | null {
  const rec = record(state);
  return rec === undefined ? null : `postgres://${roleName('monitor')}@127.0.0.1:${rec.port}/pgbouncer`;
}

export function pgbouncer(): Component {
  return {
    name: 'pgbouncer',
    async up(ctx) {
      const binary = pgbouncerBinary();
      if (binary === undefined) throw new Error('pgbouncer is not installed: scripts/install-ops-tools.sh');
      const replication = replicationRecord(ctx.state);
      if (replication === undefined) throw new Error('pgbouncer needs the replication component before it');
      const dir = join(ctx.state.stateDir, 'pgbouncer');
      mkdirSync(dir, { recursive: true });
      const rec: PgbouncerRecord = {
        dir,
        port: await freePort(),
        config: join(dir, 'pgbouncer.ini'),
        pidFile: join(dir, 'pgbouncer.pid'),
        log: join(dir, 'pgbouncer.log'),
      };
      ctx.state.components.pgbouncer = rec;
      ctx.save();
      const { primary } = replication;
      writeFileSync(
        rec.config,
        renderPgbouncerIni({
          databases: { [databaseName]: `host=127.0.0.1 port=${primary.port} dbname=${databaseName}` },
          settings: {
            listen_addr: '127.0.0.1',
            listen_port: String(rec.port),
            unix_socket_dir: '',
            logfile: rec.log,
            pidfile: rec.pidFile,
            auth_hba_file: join(dir, 'pgbouncer-hba.conf'),
            auth_file: join(dir, 'userlist.txt'),
          },
        }),
      );
      writeFileSync(join(dir, 'pgbouncer-hba.conf'), renderPgbouncerHba('127.0.0.0/8'));
      // The SCRAM secrets PostgreSQL stores (SCRAM pass-through: PgBouncer logs in with the client's keys).
      const users = (['app', 'owner', 'monitor'] as const).map(roleName);
      const secrets = psqlRows(
        socketUrl(primary, 'postgres'),
        `SELECT rolname, rolpassword FROM pg_authid WHERE rolname IN (${users.map((u) => `'${u}'`).join(', ')}) ORDER BY rolname`,
      );
      if (secrets === null || secrets.length !== users.length)
        throw new Error('pgbouncer: could not read the roles’ SCRAM secrets from the primary');
      writeFileSync(
        join(dir, 'userlist.txt'),
        `${secrets.map(([name, secret]) => userlistLine(name as string, secret as string)).join('\n')}\n`,
        { mode: 0o600 },
      );
      const asRoot = process.getuid?.() === 0;
      if (asRoot)
        for (const file of ['', 'pgbouncer.ini', 'pgbouncer-hba.conf', 'userlist.txt'])
          chownToPostgres(join(dir, file));
      try {
        await run(binary, ['-d', ...(asRoot ? ['-u', 'postgres'] : []), rec.config], { timeout: 30_000 });
      } catch (err) {
        throw new Error(`pgbouncer did not start: ${(err as Error).message}\n${readLog(rec)}`);
      }
      await waitFor(`pgbouncer to answer on 127.0.0.1:${rec.port} (log: ${rec.log})`, () => {
        if (!isAlive(pidOf(rec)) && pidOf(rec) !== null)
          throw new GiveUp(`pgbouncer exited:\n${readLog(rec)}`);
        return showPools(ctx.state) !== null;
      });
      const app = new URL(`postgres://127.0.0.1:${rec.port}/${databaseName}`);
      app.username = roleName('app');
      ctx.state.databases.push({ role: 'pgbouncer', url: app.toString() });
      app.password = encodeURIComponent(rolePassword(replication, 'app'));
      ctx.appEnv.DATABASE_URL = app.toString();
      // Behind PgBouncer the pooler's limits apply (max_db_connections), not max_connections.
      ctx.appEnv.DATABASE_BUDGET_CHECK = 'off';
      ctx.log(`pgbouncer: 127.0.0.1:${rec.port} (transaction pooling) in front of the primary`);
      ctx.save();
    },
    async down(state, log) {
      const rec = record(state);
      if (rec === undefined) return;
      const pid = pidOf(rec);
      if (isAlive(pid))
        await killAndWait([pid as number], 'SIGINT').catch(() => killAndWait([pid as number]));
      rmSync(rec.dir, { recursive: true, force: true });
      log('pgbouncer: stopped');
    },
    status(state) {
      const rec = record(state);
      if (rec === undefined) return null;
      return {
        pid: isAlive(pidOf(rec)) ? pidOf(rec) : null,
        port: rec.port,
        config: rec.config,
        log: rec.log,
        console: pgbouncerConsoleUrl(state),
        consolePasswordFile: replicationRecord(state)?.passwords.monitor ?? null,
        pools: showPools(state),
      };
    },
  };
}

function readLog(rec: PgbouncerRecord): string {
  try {
    return readFileSync(rec.log, 'utf8').slice(-2000);
  } catch {
    return '';
  }
}

/** SHOW POOLS of the app's database on the console (null when PgBouncer does not answer). */
export function showPools(state: StackState): Array<Record<string, string | number>> | null {
  const url = pgbouncerConsoleUrl(state);
  const replication = replicationRecord(state);
  if (url === null || replication === undefined) return null;
  const rows = psqlObjects(url, 'SHOW POOLS', { PGPASSWORD: rolePassword(replication, 'monitor') });
  if (rows === null) return null;
  return rows
    .filter((r) => r.database === databaseName)
    .map((r) => ({
      database: r.database as string,
      user: r.user as string,
      clientsActive: Number(r.cl_active),
      clientsWaiting: Number(r.cl_waiting),
      serversActive: Number(r.sv_active),
      serversIdle: Number(r.sv_idle),
      serversUsed: Number(r.sv_used),
      maxWaitSeconds: Number(r.maxwait),
      mode: r.pool_mode as string,
    }));
}
