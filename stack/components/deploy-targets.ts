import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  closeSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { secretsToFiles } from '../secrets.js';
import type { Component, ServerRecord, StackState } from '../types.js';
import { freePort, freePortRange, isAlive, killAndWait, waitFor } from '../util.js';

/**
 * App servers as deploy targets (`npm run stack -- up --stage growth --deploy-targets`): each server
 * is a "machine" of its own on loopback — its own Unix user, home and release layout
 * (releases/, shared/.env 0600, shared/secrets/), and its own real sshd on its own address, with a
 * host key pinned in a known_hosts file. Nothing runs until `scripts/deploy.sh --env local`
 * ships a release (the environment file is written to <state-dir>/deploy/local.json). Needs root
 * (sshd switches to the target users) and openssh-server (scripts/install-ops-tools.sh).
 * The launch-sequence tests (test/ops/deploy-launch.test.ts) provision the same targets.
 */

export const sshdBin = process.env.SSHD_BIN ?? '/usr/sbin/sshd';

export interface TargetSpec {
  readonly name: string;
  readonly host: string;
}

export interface DeployTarget {
  readonly name: string;
  readonly user: string;
  readonly host: string;
  readonly sshPort: number;
  /** The target's home; the release layout is <home>/app. */
  readonly home: string;
  readonly dir: string;
  readonly sshDir: string;
  readonly port: number;
  readonly metricsPort: number;
  readonly instances: number;
}

export interface DeployTargets {
  readonly baseDir: string;
  readonly targets: readonly DeployTarget[];
  readonly identityFile: string;
  readonly knownHosts: string;
  /** The environment file for scripts/deploy.sh --config (or --env local for the stack's). */
  readonly environmentFile: string;
}

function uid(user: string): number {
  return Number(execFileSync('id', ['-u', user], { encoding: 'utf8' }).trim());
}

function quoteEnv(value: string): string {
  return `'${value.replaceAll("'", "'\\''")}'`;
}

/** The sshd of a target: a key-only, one-user daemon with its own host key, pid file and port. */
function sshdConfig(t: DeployTarget): string {
  return [
    `ListenAddress ${t.host}:${t.sshPort}`,
    `HostKey ${join(t.sshDir, 'host_ed25519')}`,
    `PidFile ${join(t.sshDir, 'sshd.pid')}`,
    `AuthorizedKeysFile ${join(t.sshDir, 'authorized_keys')}`,
    `AllowUsers ${t.user}`,
    'AuthenticationMethods publickey',
    'PasswordAuthentication no',
    'KbdInteractiveAuthentication no',
    'PermitRootLogin no',
    'UsePAM no',
    // The test tree lives under /tmp: its modes are not sshd's business here.
    'StrictModes no',
    'AllowTcpForwarding no',
    'X11Forwarding no',
    'PrintMotd no',
    'MaxStartups 200:30:400',
    'MaxSessions 50',
    'LogLevel ERROR',
    '',
  ].join('\n');
}

export function sshdPid(t: DeployTarget): number | null {
  try {
    const pid = Number(readFileSync(join(t.sshDir, 'sshd.pid'), 'utf8').trim());
    return isAlive(pid) ? pid : null;
  } catch {
    return null;
  }
}

/** Starts (or restarts) a target's sshd; resolves once it accepts connections. */
export async function startSshd(t: DeployTarget): Promise<void> {
  mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
  const config = join(t.sshDir, 'sshd_config');
  const check = spawnSync(sshdBin, ['-t', '-f', config], { encoding: 'utf8' });
  if (check.status !== 0) throw new Error(`sshd -t refused ${config}: ${check.stderr}`);
  const log = openSync(join(t.sshDir, 'sshd.log'), 'a');
  const child = spawn(sshdBin, ['-D', '-e', '-f', config], { stdio: ['ignore', log, log], detached: true });
  closeSync(log);
  child.unref();
  await waitFor(`${t.name}: sshd on ${t.host}:${t.sshPort}`, () => sshdPid(t) !== null, 30_000);
}

export async function stopSshd(t: DeployTarget): Promise<void> {
  const pid = sshdPid(t);
  if (pid !== null) await killAndWait([pid], 'SIGTERM');
}

/** A new host key for the target's sshd (a "reinstalled" or impersonated server), restarted. */
export async function replaceHostKey(t: DeployTarget): Promise<void> {
  await stopSshd(t);
  const key = join(t.sshDir, 'host_ed25519');
  rmSync(key, { force: true });
  rmSync(`${key}.pub`, { force: true });
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', t.name, '-f', key]);
  await startSshd(t);
}

/**
 * Provisions loopback deploy targets under baseDir: users, layout, sshd, pinned known_hosts, a
 * deployer key, and the environment file. `appEnv` is the service's environment; *_FILE secrets are
 * copied into each target's shared/secrets (0600, owned by the target's user).
 */
export async function provisionTargets(options: {
  baseDir: string;
  specs: readonly TargetSpec[];
  appEnv: Readonly<Record<string, string>>;
  instances: number;
  environment: Record<string, unknown>;
  log?: (line: string) => void;
}): Promise<DeployTargets> {
  if (process.getuid?.() !== 0)
    throw new Error('deploy targets need root (sshd switches to each target user)');
  if (!existsSync(sshdBin))
    throw new Error(`no sshd at ${sshdBin}: install openssh-server (scripts/install-ops-tools.sh)`);
  const baseDir = options.baseDir;
  mkdirSync(baseDir, { recursive: true });
  chmodSync(baseDir, 0o755);
  // sshd reads authorized_keys as the target's user, and the user lives in its home below baseDir:
  // every directory above must be searchable (x) by others — a mkdtemp parent (0700) is not.
  for (let dir = dirname(baseDir); dir !== dirname(dir); dir = dirname(dir)) {
    const mode = statSync(dir).mode & 0o7777;
    if ((mode & 0o001) === 0) chmodSync(dir, mode | 0o001);
  }
  const identityFile = join(baseDir, 'deployer_ed25519');
  if (!existsSync(identityFile))
    execFileSync('ssh-keygen', [
      '-q',
      '-t',
      'ed25519',
      '-N',
      '',
      '-C',
      'shipshape-deployer',
      '-f',
      identityFile,
    ]);
  const publicKey = readFileSync(`${identityFile}.pub`, 'utf8');
  const knownHosts = join(baseDir, 'known_hosts');
  const tag = randomBytes(3).toString('hex');
  const targets: DeployTarget[] = [];
  const recordFile = join(baseDir, 'targets.json');
  const save = () => writeFileSync(recordFile, `${JSON.stringify(targets, null, 2)}\n`);
  for (const [i, spec] of options.specs.entries()) {
    const home = join(baseDir, spec.name);
    const target: DeployTarget = {
      name: spec.name,
      user: `shipshape-${tag}-${i + 1}`,
      host: spec.host,
      sshPort: await freePort(spec.host),
      home,
      dir: join(home, 'app'),
      sshDir: join(baseDir, `${spec.name}-sshd`),
      port: await freePort(spec.host),
      metricsPort: await freePortRange(options.instances, spec.host),
      instances: options.instances,
    };
    mkdirSync(join(target.dir, 'shared', 'secrets'), { recursive: true });
    // '*', not useradd's default '!': sshd without PAM refuses a locked account even with a key.
    execFileSync('useradd', [
      '--password',
      '*',
      '--no-create-home',
      '--home-dir',
      home,
      '--shell',
      '/bin/bash',
      '--user-group',
      target.user,
    ]);
    targets.push(target);
    save();
    const id = uid(target.user);
    const secrets = join(target.dir, 'shared', 'secrets');
    const given: Record<string, string> = {};
    for (const [key, value] of Object.entries(options.appEnv)) {
      if (key.endsWith('_FILE')) {
        const copy = join(secrets, key.slice(0, -5).toLowerCase().replaceAll('_', '-'));
        copyFileSync(value, copy);
        chmodSync(copy, 0o600);
        given[key] = copy;
      } else given[key] = value;
    }
    // Secrets live in files, as in production (PM2 would write a plain value into its dump). A
    // password in DATABASE_URL makes a leak visible: the deploy tests look for it in every output.
    if (given.DATABASE_URL !== undefined) {
      const url = new URL(given.DATABASE_URL);
      if (url.password === '') url.password = randomBytes(12).toString('hex');
      given.DATABASE_URL = url.toString();
    }
    const env = secretsToFiles(given, secrets);
    Object.assign(env, {
      NODE_BIN: process.execPath,
      HOST: target.host,
      PORT: String(target.port),
      METRICS_PORT: String(target.metricsPort),
      PM2_INSTANCES: String(target.instances),
      PM2_APP_NAME: target.name,
    });
    const envFile = join(target.dir, 'shared', '.env');
    writeFileSync(
      envFile,
      `${Object.entries(env)
        .map(([k, v]) => `${k}=${quoteEnv(v)}`)
        .join('\n')}\n`,
      { mode: 0o600 },
    );
    chmodSync(envFile, 0o600);
    execFileSync('chown', ['-R', `${id}:${id}`, home]);
    chmodSync(home, 0o750);
    mkdirSync(target.sshDir, { recursive: true, mode: 0o755 });
    execFileSync('ssh-keygen', [
      '-q',
      '-t',
      'ed25519',
      '-N',
      '',
      '-C',
      target.name,
      '-f',
      join(target.sshDir, 'host_ed25519'),
    ]);
    writeFileSync(join(target.sshDir, 'authorized_keys'), publicKey, { mode: 0o644 });
    chownSync(join(target.sshDir, 'authorized_keys'), 0, 0);
    writeFileSync(join(target.sshDir, 'sshd_config'), sshdConfig(target));
    await startSshd(target);
    const hostKey = readFileSync(join(target.sshDir, 'host_ed25519.pub'), 'utf8')
      .trim()
      .split(' ')
      .slice(0, 2)
      .join(' ');
    writeFileSync(knownHosts, `[${target.host}]:${target.sshPort} ${hostKey}\n`, { flag: 'a', mode: 0o644 });
    options.log?.(
      `${target.name}: deploy target ${target.user}@${target.host}:${target.sshPort} (${target.dir}), app on ${target.host}:${target.port}`,
    );
  }
  const environmentFile = join(baseDir, 'local.json');
  writeFileSync(
    environmentFile,
    `${JSON.stringify(
      {
        name: 'local',
        knownHosts,
        identityFile,
        targets: targets.map((t) => ({
          name: t.name,
          host: t.host,
          port: t.sshPort,
          user: t.user,
          dir: t.dir,
        })),
        ...options.environment,
      },
      null,
      2,
    )}\n`,
  );
  return { baseDir, targets, identityFile, knownHosts, environmentFile };
}

/** Live pids of the target's PM2 daemon and workers (from its PM2_HOME). */
export function targetPids(t: DeployTarget): number[] {
  const home = join(t.dir, 'shared', 'pm2');
  const pids: number[] = [];
  const read = (f: string) => {
    try {
      const pid = Number(readFileSync(f, 'utf8').trim());
      if (isAlive(pid)) pids.push(pid);
    } catch {
      // not there
    }
  };
  read(join(home, 'pm2.pid'));
  const dir = join(home, 'pids');
  if (existsSync(dir))
    for (const f of spawnSync('ls', [dir], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean))
      read(join(dir, f));
  return pids;
}

/** Stops everything of the targets (by pid: sshd, PM2, anything left running as their users), removes the users. */
export async function removeTargets(baseDir: string, log: (line: string) => void = () => {}): Promise<void> {
  const recordFile = join(baseDir, 'targets.json');
  if (!existsSync(recordFile)) return;
  const targets = JSON.parse(readFileSync(recordFile, 'utf8')) as DeployTarget[];
  const problems: string[] = [];
  for (const t of targets) {
    await stopSshd(t).catch((err: unknown) => problems.push(`${t.name} sshd: ${String(err)}`));
    // Every process of the target's own user is one this stack (or a deploy into it) started.
    const left = spawnSync('ps', ['-u', t.user, '-o', 'pid='], { encoding: 'utf8' })
      .stdout.split('\n')
      .map((s) => Number(s.trim()))
      .filter((p) => p > 0);
    const daemon = targetPids(t);
    const all = [...new Set([...daemon, ...left])];
    if (all.length > 0)
      await killAndWait(all).catch((err: unknown) => problems.push(`${t.name}: ${String(err)}`));
    const removed = spawnSync('userdel', [t.user], { encoding: 'utf8' });
    if (removed.status !== 0 && !/does not exist/.test(removed.stderr))
      problems.push(`userdel ${t.user}: ${removed.stderr.trim()}`);
    spawnSync('groupdel', [t.user], { encoding: 'utf8' });
    log(`${t.name}: deploy target removed`);
  }
  if (problems.length > 0) throw new Error(problems.join('; '));
  rmSync(baseDir, { recursive: true, force: true });
}

/**
 * The stack component: growth's app servers as deploy targets. The servers appear in the stack's
 * state (nginx renders them as upstreams) with PM2_HOME in their layout, so `status` sees their
 * workers once a release is deployed.
 */
export function deployTargets(options: {
  servers: readonly (TargetSpec & { role?: 'primary' | 'backup'; weight?: number })[];
  instances: number;
  env?: Readonly<Record<string, string>>;
}): Component {
  return {
    name: 'deploy-targets',
    async up(ctx) {
      const instances = ctx.options.instances ?? options.instances;
      const baseDir = join(ctx.state.stateDir, 'deploy');
      ctx.state.components['deploy-targets'] = { baseDir };
      ctx.save();
      const provisioned = await provisionTargets({
        baseDir,
        specs: options.servers,
        appEnv: { ...ctx.appEnv, ...options.env, ...ctx.options.appEnv },
        instances,
        environment: { readySeconds: 90, watchSeconds: 30, lockHeartbeatSeconds: 5, lockStaleSeconds: 60 },
        log: (l) => ctx.log(l),
      });
      for (const [i, t] of provisioned.targets.entries()) {
        const spec = options.servers[i];
        const record: ServerRecord = {
          name: t.name,
          role: spec?.role ?? 'primary',
          weight: spec?.weight ?? 1,
          host: t.host,
          port: t.port,
          metricsPort: t.metricsPort,
          instances,
          pm2Home: join(t.dir, 'shared', 'pm2'),
          pid: null,
          env: {},
          deployDir: t.dir,
        };
        ctx.state.servers.push(record);
      }
      ctx.log(
        `deploy targets ready: scripts/deploy.sh --env local (environment file ${provisioned.environmentFile})`,
      );
      ctx.save();
    },
    async down(state: StackState, log) {
      const record = state.components['deploy-targets'] as { baseDir: string } | undefined;
      if (record !== undefined) await removeTargets(record.baseDir, log);
    },
    status(state) {
      const record = state.components['deploy-targets'] as { baseDir: string } | undefined;
      return record === undefined ? null : { environmentFile: join(record.baseDir, 'local.json') };
    },
  };
}
