import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Ini } from '../lib/ini.js';

/**
 * deploy/pgbouncer/ for one host. The shipped pgbouncer.ini and pgbouncer-hba.conf are used as they
 * are in production; the tests and `npm run stack` render them for loopback with this function,
 * which replaces only the keys that name hosts, ports, paths and databases. The pooling settings
 * (pool_mode, sizes, timeouts, ignore_startup_parameters) always come from the shipped file.
 */

const root = fileURLToPath(new URL('../../', import.meta.url));
export const pgbouncerDir = join(root, 'deploy', 'pgbouncer');

/** The keys a deployment may set per host: nothing that changes how the pool behaves. */
export const localKeys = [
  'listen_addr',
  'listen_port',
  'unix_socket_dir',
  'logfile',
  'pidfile',
  'auth_hba_file',
  'auth_file',
  'admin_users',
  'stats_users',
] as const;

export type LocalKey = (typeof localKeys)[number];

export interface PgbouncerSite {
  /** `[databases]` entries, replacing the shipped ones (name → connection string). */
  readonly databases: Readonly<Record<string, string>>;
  readonly settings: Partial<Record<LocalKey, string>>;
}

/** The shipped pgbouncer.ini with this host's databases, addresses and paths. */
export function renderPgbouncerIni(site: PgbouncerSite, template = readShipped('pgbouncer.ini')): string {
  for (const key of Object.keys(site.settings))
    if (!(localKeys as readonly string[]).includes(key)) throw new Error(`not a per-host key: ${key}`);
  const out: string[] = [];
  let section = '';
  const pending = new Map(Object.entries(site.settings));
  const flush = () => {
    if (section === 'pgbouncer') for (const [key, value] of pending) out.push(`${key} = ${value}`);
    if (section === 'pgbouncer') pending.clear();
  };
  for (const line of template.split('\n')) {
    const header = /^\s*\[(.+)\]\s*$/.exec(line);
    if (header) {
      flush();
      section = header[1] as string;
      out.push(line);
      if (section === 'databases')
        for (const [name, connection] of Object.entries(site.databases)) out.push(`${name} = ${connection}`);
      continue;
    }
    const setting = /^\s*([A-Za-z_*][\w.*-]*)\s*=/.exec(line);
    if (setting && section === 'databases') continue;
    const key = setting?.[1];
    if (key !== undefined && section === 'pgbouncer' && pending.has(key)) {
      out.push(`${key} = ${pending.get(key)}`);
      pending.delete(key);
      continue;
    }
    out.push(line);
  }
  flush();
  return out.join('\n');
}

/** The shipped client-authentication file with the VPC range replaced (e.g. by loopback in tests). */
export function renderPgbouncerHba(vpcRange: string, template = readShipped('pgbouncer-hba.conf')): string {
  return template.replaceAll('10.20.0.0/20', vpcRange);
}

export function readShipped(name: 'pgbouncer.ini' | 'pgbouncer-hba.conf'): string {
  return readFileSync(join(pgbouncerDir, name), 'utf8');
}

/** A `userlist.txt` line: PgBouncer's quoting doubles a `"` inside a value. */
export function userlistLine(user: string, secret: string): string {
  const quote = (value: string) => `"${value.replaceAll('"', '""')}"`;
  return `${quote(user)} ${quote(secret)}`;
}

/**
 * The most server connections the shipped pools can open to the primary: the app's database cap
 * plus its reserve, plus each [users] cap (their pools share the database's max_db_connections only
 * if set lower there, so they are added to be safe).
 */
export function serverConnectionCeiling(ini: Ini): number {
  const settings = ini.pgbouncer ?? {};
  const perDb = Number(settings.max_db_connections ?? 0);
  const reserve = Number(settings.reserve_pool_size ?? 0);
  let users = 0;
  for (const value of Object.values(ini.users ?? {})) {
    const cap = /max_user_connections\s*=\s*(\d+)/.exec(value);
    users += cap ? Number(cap[1]) : 0;
  }
  return perDb + reserve + users;
}

/** Where pgbouncer is (Debian puts it in /usr/sbin, which a non-root PATH may lack). */
export function pgbouncerBinary(): string | undefined {
  for (const candidate of ['/usr/sbin/pgbouncer', '/usr/bin/pgbouncer'])
    if (existsSync(candidate)) return candidate;
  try {
    return execFileSync('sh', ['-c', 'command -v pgbouncer'], { encoding: 'utf8' }).trim() || undefined;
  } catch {
    return undefined;
  }
}
