import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';

/**
 * A deploy environment (`--env <name>`): the servers, the pinned host keys, and the gates. Read from
 * `deploy/environments/<name>.json` (or the file given with `--config`; `--env local` defaults to
 * the stack's `.stack/deploy/local.json`, written by `npm run stack -- up --stage growth
 * --deploy-targets`). Relative paths are relative to the file; DEPLOY_KNOWN_HOSTS_FILE and
 * DEPLOY_IDENTITY_FILE override the file's knownHosts and identityFile. Format:
 * deploy/environments/example.json.
 */
export interface Target {
  readonly name: string;
  readonly host: string;
  readonly port: number;
  readonly user: string;
  /** The release layout's root on the server (deploy/server/bootstrap.sh --app-dir). */
  readonly dir: string;
}

export interface Environment {
  readonly name: string;
  readonly file: string;
  /** known_hosts with every target's key: without an entry for each, nothing runs. */
  readonly knownHosts: string;
  readonly identityFile: string | null;
  readonly targets: readonly Target[];
  readonly keepReleases: number;
  /** Deadline for the smoke boot and for every worker's /ready after a reload. */
  readonly readySeconds: number;
  /** The canary's watch window after its switch, before any other server is touched. */
  readonly watchSeconds: number;
  /** The canary fails the watch above this 5xx ratio (and above twice the old servers' ratio). */
  readonly maxErrorRatio: number;
  /** …or when its p95 exceeds this factor × the old servers' p95 (and 250 ms). */
  readonly maxP95Factor: number;
  /** scripts/monitor-traffic.sh --env: the SLO a server breaches above this 5xx ratio… */
  readonly sloMaxErrorRatio: number;
  /** …or above this p95 (ms); both need enough requests in the window to say so. */
  readonly sloMaxP95Ms: number;
  readonly lockHeartbeatSeconds: number;
  /** A lock whose heartbeat is older than this is reclaimed (the holder is presumed dead). */
  readonly lockStaleSeconds: number;
}

export class EnvironmentError extends Error {}

const name = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

function num(value: unknown, field: string, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max)
    throw new EnvironmentError(`${field} must be a number from ${min} to ${max}`);
  return value;
}

function str(value: unknown, field: string, pattern: RegExp): string {
  if (typeof value !== 'string' || !pattern.test(value))
    throw new EnvironmentError(`${field} must match ${pattern}`);
  return value;
}

export function environmentFile(env: string, config: string | undefined, cwd: string): string {
  if (config !== undefined) return resolve(cwd, config);
  if (env === 'local')
    return resolve(process.env.STACK_DIR ?? resolve(cwd, '.stack'), 'deploy', 'local.json');
  return resolve(cwd, 'deploy', 'environments', `${env}.json`);
}

export function loadEnvironment(file: string): Environment {
  if (!existsSync(file)) throw new EnvironmentError(`no environment file ${file}`);
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new EnvironmentError(`${file}: ${(err as Error).message}`);
  }
  const base = dirname(file);
  const path = (value: unknown, field: string) => {
    const p = str(value, field, /^[^\0\n]+$/);
    return isAbsolute(p) ? p : resolve(base, p);
  };
  if (!Array.isArray(raw.targets) || raw.targets.length === 0)
    throw new EnvironmentError(`${file}: targets must list at least one server`);
  const targets = raw.targets.map(
    (t: Record<string, unknown>, i: number): Target => ({
      name: str(t.name, `targets[${i}].name`, name),
      host: str(t.host, `targets[${i}].host`, /^[A-Za-z0-9.:-]{1,253}$/),
      port: num(t.port, `targets[${i}].port`, 22, 1, 65535),
      user: str(t.user, `targets[${i}].user`, /^[a-z_][a-z0-9_-]{0,31}$/),
      dir: str(t.dir, `targets[${i}].dir`, /^\/[A-Za-z0-9._/-]+$/),
    }),
  );
  if (new Set(targets.map((t) => t.name)).size !== targets.length)
    throw new EnvironmentError(`${file}: target names must be unique`);
  const heartbeat = num(raw.lockHeartbeatSeconds, 'lockHeartbeatSeconds', 10, 1, 600);
  const stale = num(raw.lockStaleSeconds, 'lockStaleSeconds', 120, 3, 86_400);
  if (stale < 3 * heartbeat)
    throw new EnvironmentError('lockStaleSeconds must be at least three heartbeats (lockHeartbeatSeconds)');
  return {
    name: str(raw.name, 'name', name),
    file,
    // CI writes both from the environment's secrets (.github/workflows/deploy.yml).
    knownHosts: process.env.DEPLOY_KNOWN_HOSTS_FILE ?? path(raw.knownHosts, 'knownHosts'),
    identityFile:
      process.env.DEPLOY_IDENTITY_FILE ??
      (raw.identityFile === undefined ? null : path(raw.identityFile, 'identityFile')),
    targets,
    keepReleases: num(raw.keepReleases, 'keepReleases', 5, 2, 100),
    readySeconds: num(raw.readySeconds, 'readySeconds', 60, 5, 3600),
    watchSeconds: num(raw.watchSeconds, 'watchSeconds', 60, 0, 3600),
    maxErrorRatio: num(raw.maxErrorRatio, 'maxErrorRatio', 0.01, 0, 1),
    maxP95Factor: num(raw.maxP95Factor, 'maxP95Factor', 2, 1, 100),
    sloMaxErrorRatio: num(raw.sloMaxErrorRatio, 'sloMaxErrorRatio', 0.01, 0, 1),
    sloMaxP95Ms: num(raw.sloMaxP95Ms, 'sloMaxP95Ms', 500, 1, 600_000),
    lockHeartbeatSeconds: heartbeat,
    lockStaleSeconds: stale,
  };
}

/** known_hosts names a non-22 port as `[host]:port`. */
export function knownHostsName(target: Target): string {
  return target.port === 22 ? target.host : `[${target.host}]:${target.port}`;
}

/** Targets without a pinned key in the environment's known_hosts (all of them if it is missing). */
export function unpinnedTargets(env: Environment): Target[] {
  if (!existsSync(env.knownHosts)) return [...env.targets];
  return env.targets.filter((t) => {
    const found = spawnSync('ssh-keygen', ['-F', knownHostsName(t), '-f', env.knownHosts], {
      encoding: 'utf8',
    });
    return found.status !== 0 || found.stdout.trim() === '';
  });
}
