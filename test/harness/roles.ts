import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { loadConfig } from '../../src/config.js';
import { migrateToLatest } from '../../src/db/migrator.js';
import { createDatabase } from '../../src/infra/database.js';

/**
 * The production roles on a cluster of our own (deploy/postgres/roles.sql, database.sql), and test
 * databases laid out as production's: owned by shipshape_owner, migrated as it, used by the service
 * as shipshape_app. Only for throwaway clusters: roles are cluster-wide, never made on the
 * machine's shared server.
 */

const deploy = fileURLToPath(new URL('../../deploy/postgres/', import.meta.url));
export const rolesSql = `${deploy}roles.sql`;
export const databaseSql = `${deploy}database.sql`;

export const rolePasswords = {
  owner: 'owner-test-password',
  app: 'app-test-password',
  reporting: 'reporting-test-password',
  replication: 'replication-test-password',
  monitor: 'monitor-test-password',
} as const;

export const roleNames = {
  owner: 'shipshape_owner',
  app: 'shipshape_app',
  reporting: 'shipshape_reporting',
  replication: 'shipshape_replication',
  monitor: 'shipshape_monitor',
} as const;

/** psql with ON_ERROR_STOP, a script and variables; throws with psql's output on failure. */
export function psqlFile(
  url: string,
  file: string,
  variables: Readonly<Record<string, string>> = {},
): string {
  const args = ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', url, '-f', file];
  for (const [name, value] of Object.entries(variables)) args.push('-v', `${name}=${value}`);
  try {
    return execFileSync('psql', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    throw new Error(`psql -f ${file} failed:\n${e.stdout ?? ''}${e.stderr ?? ''}`);
  }
}

/** roles.sql on a throwaway cluster, as its superuser. */
export function createRoles(adminUrl: string): void {
  psqlFile(adminUrl, rolesSql, {
    owner_password: rolePasswords.owner,
    app_password: rolePasswords.app,
    reporting_password: rolePasswords.reporting,
    replication_password: rolePasswords.replication,
    monitor_password: rolePasswords.monitor,
  });
}

/** A connection string with another user, password and database on the same host. */
export function withCredentials(base: string, user: string, password: string, database: string): string {
  const url = new URL(base);
  url.username = encodeURIComponent(user);
  url.password = encodeURIComponent(password);
  url.pathname = `/${database}`;
  return url.toString();
}

/** database.sql in an (empty) database, then the migrations as shipshape_owner through `ownerBase`. */
export async function prepareDatabase(adminDatabaseUrl: string, ownerUrl: string): Promise<void> {
  psqlFile(adminDatabaseUrl, databaseSql);
  const config = loadConfig({ NODE_ENV: 'test', DATABASE_URL: ownerUrl, JWT_SECRET: 'x'.repeat(48) });
  const handle = createDatabase(config.database, pino({ level: 'silent' }));
  try {
    await migrateToLatest(handle.db, handle.engine);
  } finally {
    await handle.close();
  }
}
