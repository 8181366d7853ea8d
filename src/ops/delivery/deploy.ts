import { randomBytes } from 'node:crypto';
import { hostname, userInfo } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Artifact, Manifest } from './artifact.js';
import { type Environment, knownHostsName, type Target, unpinnedTargets } from './environment.js';
import { type AgentResult, lastLines, RemoteError, records, runAgent, sshFailure } from './ssh.js';
import { combine, judgeCanary, parseMetrics, type Snapshot, windowStats } from './watch.js';

/**
 * The deploy, rollback, list and health-check verbs (scripts/deploy.sh, rollback.sh,
 * health-check.sh). Docs: README "Deploy"; docs/decisions/0066-deploy-sequence-and-rollback.md,
 * 0067-deploy-lock.md.
 */

/** Exit codes shared by every verb. */
export const exitCodes = {
  ok: 0,
  /** Failed; every server already switched was switched back (or none had been). */
  failed: 1,
  usage: 2,
  lockHeld: 3,
  /** Failed, and switching back failed too: a human must look. */
  rollbackFailed: 4,
  /**
   * Rollback refused: the target release predates a contract migration the database has applied
   * (it would read what is gone). Nothing was changed; `--force` overrides. Decision 0102.
   */
  schemaRefused: 5,
} as const;

export interface Output {
  out(line: string): void;
  err(line: string): void;
}

export class DeployFailure extends Error {
  constructor(
    message: string,
    readonly code: number,
  ) {
    super(message);
  }
}

interface Context {
  readonly root: string;
  readonly env: Environment;
  readonly io: Output;
}

async function agent(
  ctx: Context,
  target: Target,
  step: string,
  args: string[],
  options: { stdinFile?: string; timeoutMs?: number; allow?: number[] } = {},
): Promise<AgentResult> {
  const result = await runAgent(ctx.root, ctx.env, target, args, options);
  if (result.code === sshFailure && /host key|HOST IDENTIFICATION|Host key verification/i.test(result.stderr))
    throw new DeployFailure(
      `${target.name}: the host key of ${knownHostsName(target)} does not match ${ctx.env.knownHosts}; nothing was run there. ${lastLines(result.stderr, 3)}`,
      exitCodes.failed,
    );
  if (result.code !== 0 && !(options.allow ?? []).includes(result.code))
    throw new RemoteError(target.name, step, result);
  return result;
}

// --- Status ----------------------------------------------------------------------------------------

export interface TargetStatus {
  readonly current: string;
  readonly releases: ReadonlyMap<string, Manifest>;
  readonly good: readonly string[];
  readonly deps: ReadonlySet<string>;
  readonly lock: string | null;
}

async function targetStatus(ctx: Context, target: Target): Promise<TargetStatus> {
  const result = await agent(ctx, target, 'status', ['status'], { timeoutMs: 60_000 });
  let current = '';
  const releases = new Map<string, Manifest>();
  const good: string[] = [];
  const deps = new Set<string>();
  let lock: string | null = null;
  for (const [key, a = '', b = ''] of records(result.stdout)) {
    if (key === 'current') current = a;
    else if (key === 'release') {
      try {
        releases.set(a, JSON.parse(b) as Manifest);
      } catch {
        // an unreadable manifest: not a release rollback can pick
      }
    } else if (key === 'good') good.push(a);
    else if (key === 'deps') deps.add(a);
    else if (key === 'lock') lock = a;
  }
  return { current, releases, good, deps, lock };
}

function describe(status: TargetStatus, id: string): string {
  if (id === '') return '(none)';
  const m = status.releases.get(id);
  return m === undefined ? id : `${id} (${m.version})`;
}

// --- Lock ------------------------------------------------------------------------------------------

class Locks {
  private readonly token = randomBytes(16).toString('hex');
  private readonly held: Target[] = [];
  private timer: NodeJS.Timeout | undefined;
  lost: string | null = null;

  constructor(private readonly ctx: Context) {}

  /** Every target's lock, in the environment's order (so two deployers cannot deadlock). */
  async acquire(commit: string, waitSeconds: number): Promise<void> {
    const owner = `${userInfo().username}@${hostname()} pid ${process.pid}${
      process.env.GITHUB_RUN_ID === undefined ? '' : ` run ${process.env.GITHUB_RUN_ID}`
    }`;
    const deadline = Date.now() + waitSeconds * 1000;
    for (const target of this.ctx.env.targets) {
      let said = false;
      for (;;) {
        const result = await agent(
          this.ctx,
          target,
          'lock',
          ['lock', 'acquire', this.token, String(this.ctx.env.lockStaleSeconds), owner, commit],
          { allow: [75] },
        );
        const [state, holder = '', age = ''] = records(result.stdout)[0] ?? [];
        if (result.code === 0) {
          if (state === 'reclaimed')
            this.ctx.io.out(`${target.name}: reclaimed a stale deploy lock (${holder.trim()}; ${age})`);
          this.held.push(target);
          break;
        }
        if (Date.now() >= deadline) {
          await this.release();
          throw new DeployFailure(
            `${target.name}: the deploy lock is held (${holder.trim()}; ${age}); ${
              waitSeconds > 0 ? `waited ${waitSeconds}s; ` : ''
            }try again later or use --lock-wait SECONDS`,
            exitCodes.lockHeld,
          );
        }
        if (!said)
          this.ctx.io.out(
            `${target.name}: the deploy lock is held (${holder.trim()}; ${age}); waiting up to ${Math.ceil((deadline - Date.now()) / 1000)}s`,
          );
        said = true;
        await sleep(Math.min(2000, Math.max(200, deadline - Date.now())));
      }
    }
    this.timer = setInterval(() => void this.beat(), this.ctx.env.lockHeartbeatSeconds * 1000);
  }

  private async beat(): Promise<void> {
    for (const target of this.held) {
      const result = await runAgent(this.ctx.root, this.ctx.env, target, ['lock', 'heartbeat', this.token], {
        timeoutMs: 30_000,
      });
      if (result.code === 75) this.lost ??= `${target.name}: the deploy lock was taken over`;
    }
  }

  check(): void {
    if (this.lost !== null) throw new DeployFailure(this.lost, exitCodes.failed);
  }

  async release(): Promise<void> {
    if (this.timer !== undefined) clearInterval(this.timer);
    for (const target of this.held.splice(0))
      await runAgent(this.ctx.root, this.ctx.env, target, ['lock', 'release', this.token], {
        timeoutMs: 30_000,
      });
  }
}

// --- Steps on one server ---------------------------------------------------------------------------

async function ship(ctx: Context, target: Target, status: TargetStatus, artifact: Artifact): Promise<void> {
  const { manifest } = artifact;
  if (!status.deps.has(manifest.depsHash)) {
    const r = await agent(ctx, target, 'receive-deps', ['receive-deps', manifest.depsHash], {
      stdinFile: artifact.depsTar,
    });
    ctx.io.out(`${target.name}: dependencies ${manifest.depsHash.slice(0, 12)} shipped (${r.ms} ms)`);
  }
  await agent(ctx, target, 'receive', ['receive', manifest.id], { stdinFile: artifact.appTar });
  const r = await agent(ctx, target, 'install', ['install', manifest.id]);
  ctx.io.out(`${target.name}: ${manifest.id} installed (${r.ms} ms)`);
}

/** Switch `current` to `id` and reload PM2; resolves when every worker answers /ready. */
async function activate(ctx: Context, target: Target, id: string, why: string): Promise<number> {
  const started = Date.now();
  await agent(ctx, target, 'switch', ['switch', id, why]);
  await agent(ctx, target, 'reload', ['reload'], { timeoutMs: (ctx.env.readySeconds + 120) * 1000 });
  await agent(ctx, target, 'ready', ['ready'], { timeoutMs: 60_000 });
  return Date.now() - started;
}

async function snapshot(ctx: Context, target: Target): Promise<Snapshot> {
  return parseMetrics((await agent(ctx, target, 'metrics', ['metrics'], { timeoutMs: 60_000 })).stdout);
}

/** The canary against the servers still on the old release, for watchSeconds. */
async function watch(ctx: Context, canary: Target, others: readonly Target[]): Promise<void> {
  const seconds = ctx.env.watchSeconds;
  ctx.io.out(
    `${canary.name}: canary watch for ${seconds}s (against ${others.map((o) => o.name).join(', ') || 'absolute limits'})`,
  );
  const startCanary = await snapshot(ctx, canary);
  const startOthers = await Promise.all(others.map((o) => snapshot(ctx, o)));
  const end = Date.now() + seconds * 1000;
  while (Date.now() < end) {
    const ready = await runAgent(ctx.root, ctx.env, canary, ['ready'], { timeoutMs: 30_000 });
    if (ready.code !== 0)
      throw new DeployFailure(
        `${canary.name}: a worker stopped answering /ready during the canary watch: ${ready.stdout.trim().replaceAll('\n', '; ')}`,
        exitCodes.failed,
      );
    await sleep(Math.min(1000, Math.max(0, end - Date.now())));
  }
  const canaryStats = windowStats(startCanary, await snapshot(ctx, canary));
  const endOthers = await Promise.all(others.map((o) => snapshot(ctx, o)));
  const baseline = combine(endOthers.map((e, i) => windowStats(startOthers[i] as Snapshot, e)));
  const verdict = judgeCanary(canaryStats, baseline, ctx.env);
  const p95 = (p: number | null) => (p === null ? 'n/a' : `${Math.round(p * 1000)} ms`);
  ctx.io.out(
    `${canary.name}: canary ${canaryStats.requests} requests, ${canaryStats.errors} 5xx, p95 ${p95(canaryStats.p95)}, ${canaryStats.restarts} restarts; old release ${
      baseline === null
        ? 'n/a'
        : `${baseline.requests} requests, ${baseline.errors} 5xx, p95 ${p95(baseline.p95)}`
    }`,
  );
  if (!verdict.ok)
    throw new DeployFailure(
      `${canary.name}: the canary failed its watch: ${verdict.reasons.join('; ')}`,
      exitCodes.failed,
    );
}

// --- Verbs -----------------------------------------------------------------------------------------

interface Row {
  target: string;
  before: string;
  after: string;
  result: string;
}

function table(io: Output, rows: readonly Row[]): void {
  const head: Row = { target: 'server', before: 'before', after: 'now', result: 'result' };
  const all = [head, ...rows];
  const w = (k: keyof Row) => Math.max(...all.map((r) => r[k].length));
  for (const r of all)
    io.out(
      `  ${r.target.padEnd(w('target'))}  ${r.before.padEnd(w('before'))}  ${r.after.padEnd(w('after'))}  ${r.result}`,
    );
}

export function refuseUnpinned(env: Environment): void {
  const unpinned = unpinnedTargets(env);
  if (unpinned.length > 0)
    throw new DeployFailure(
      `refused: no pinned host key for ${unpinned.map((t) => `${t.name} (${knownHostsName(t)})`).join(', ')} in ${env.knownHosts}. Pin them once, checking each fingerprint out of band: ssh-keyscan -p PORT HOST >> ${env.knownHosts}`,
      exitCodes.usage,
    );
}

/**
 * Contract migrations of the new release that every release retained on every server already
 * knows: only those may run (the others would break a rollback target).
 */
export function contractAllowed(manifest: Manifest, statuses: readonly TargetStatus[]): string[] {
  const retained = statuses.flatMap((s) => [...s.releases.values()]).filter((m) => m.id !== manifest.id);
  return (manifest.contractMigrations ?? []).filter((name) =>
    retained.every((m) => m.migrations.includes(name)),
  );
}

/** Canary alone, then groups of maxParallel. */
function waves(targets: readonly Target[], maxParallel: number): Target[][] {
  const [canary, ...rest] = targets;
  const out: Target[][] = canary === undefined ? [] : [[canary]];
  for (let i = 0; i < rest.length; i += maxParallel) out.push(rest.slice(i, i + maxParallel));
  return out;
}

async function parallel<T>(
  items: readonly T[],
  limit: number,
  work: (item: T) => Promise<void>,
): Promise<void> {
  const queue = [...items];
  const errors: unknown[] = [];
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      for (let item = queue.shift(); item !== undefined; item = queue.shift())
        await work(item).catch((err: unknown) => errors.push(err));
    }),
  );
  if (errors.length > 0) throw errors[0];
}

export interface DeployOptions {
  readonly artifact: Artifact;
  readonly dryRun: boolean;
  readonly maxParallel: number;
  readonly lockWaitSeconds: number;
}

export async function deploy(
  root: string,
  env: Environment,
  io: Output,
  options: DeployOptions,
): Promise<number> {
  const ctx: Context = { root, env, io };
  refuseUnpinned(env);
  const { manifest } = options.artifact;
  const started = Date.now();
  io.out(
    `deploy ${manifest.id} (${manifest.version}, commit ${manifest.commit.slice(0, 12)}, Node ${manifest.node}, migrations up to ${manifest.migrationHead || 'none'}) to ${env.name}: ${env.targets.map((t) => t.name).join(', ')}; canary ${env.targets[0]?.name}, then ${options.maxParallel} at a time`,
  );
  if (options.dryRun) {
    for (const target of env.targets) {
      const status = await targetStatus(ctx, target);
      io.out(
        `  ${target.name}: current ${describe(status, status.current)}; would ${status.deps.has(manifest.depsHash) ? 'reuse' : 'ship'} dependencies; ${status.lock === null ? 'unlocked' : `locked by ${status.lock}`}`,
      );
    }
    io.out('dry run: nothing was changed');
    return exitCodes.ok;
  }
  // Every server answers over its pinned key (read-only) before anything is locked or changed.
  for (const target of env.targets) await targetStatus(ctx, target);
  const locks = new Locks(ctx);
  await locks.acquire(manifest.commit, options.lockWaitSeconds);
  const rows = new Map<string, Row>();
  const before = new Map<string, string>();
  const switched: Target[] = [];
  try {
    const statuses = new Map<string, TargetStatus>();
    for (const target of env.targets) {
      const status = await targetStatus(ctx, target);
      statuses.set(target.name, status);
      before.set(target.name, status.current);
      rows.set(target.name, {
        target: target.name,
        before: describe(status, status.current),
        after: describe(status, status.current),
        result: 'untouched',
      });
    }
    // 1. Ship and install everywhere before anything switches: a bad artifact changes nothing.
    try {
      // Shipping touches nothing that serves: every server at once (bounded).
      await parallel(env.targets, Math.max(options.maxParallel, 4), (t) =>
        ship(ctx, t, statuses.get(t.name) as TargetStatus, options.artifact),
      );
    } catch (err) {
      throw new DeployFailure(
        `${(err as Error).message}\nnothing was switched; every server still runs its release`,
        exitCodes.failed,
      );
    }
    locks.check();
    // 2. Migrations, once, from the new release, under the lock.
    const first = env.targets[0] as Target;
    const allowed = contractAllowed(manifest, [...statuses.values()]);
    const migrated = await agent(ctx, first, 'migrate', ['migrate', manifest.id, allowed.join(',')], {
      timeoutMs: 900_000,
    }).catch((err: Error) => {
      throw new DeployFailure(`${err.message}\nnothing was switched`, exitCodes.failed);
    });
    io.out(`${first.name}: migrations done (${migrated.ms} ms)`);
    // 3. Rolling switch: canary, watch, then the rest.
    const plan = waves(env.targets, options.maxParallel);
    for (const [wave, group] of plan.entries()) {
      await parallel(group, group.length, async (target) => {
        locks.check();
        const smoke = await agent(ctx, target, 'smoke', ['smoke', manifest.id, String(env.readySeconds)], {
          timeoutMs: (env.readySeconds + 60) * 1000,
        });
        io.out(`${target.name}: ${manifest.id} boots and answers /ready (${smoke.ms} ms)`);
        switched.push(target);
        const ms = await activate(ctx, target, manifest.id, `deploy ${manifest.version}`);
        const row = rows.get(target.name) as Row;
        row.after = `${manifest.id} (${manifest.version})`;
        row.result = 'deployed';
        io.out(`${target.name}: switched, reloaded, every worker ready (${ms} ms)`);
      });
      if (wave === 0 && env.watchSeconds > 0) await watch(ctx, group[0] as Target, env.targets.slice(1));
    }
    // 4. Good, pruned.
    for (const target of env.targets) {
      await agent(ctx, target, 'mark-good', ['mark-good', manifest.id]);
      const pruned = records((await agent(ctx, target, 'prune', ['prune', String(env.keepReleases)])).stdout);
      if (pruned.length > 0) io.out(`${target.name}: pruned ${pruned.map((p) => p[1]).join(', ')}`);
    }
    io.out(`deploy ${manifest.id} done in ${((Date.now() - started) / 1000).toFixed(1)}s`);
    table(io, [...rows.values()]);
    return exitCodes.ok;
  } catch (err) {
    io.err(`deploy failed: ${(err as Error).message}`);
    const code = await rollBack(ctx, switched, before, rows);
    table(io, [...rows.values()]);
    if (err instanceof DeployFailure && err.code !== exitCodes.failed && code === exitCodes.failed)
      return err.code;
    return code;
  } finally {
    await locks.release();
  }
}

/** Switches every server already switched back to its release from before, newest first. */
async function rollBack(
  ctx: Context,
  switched: Target[],
  before: Map<string, string>,
  rows: Map<string, Row>,
): Promise<number> {
  if (switched.length === 0) {
    ctx.io.err('no server had been switched: every server still runs its release');
    return exitCodes.failed;
  }
  const started = Date.now();
  let failed = false;
  for (const target of [...switched].reverse()) {
    const previous = before.get(target.name) ?? '';
    const row = rows.get(target.name) as Row;
    if (previous === '') {
      row.result = 'FAILED (first release: nothing to go back to)';
      failed = true;
      continue;
    }
    try {
      const ms = await activate(ctx, target, previous, 'automatic rollback');
      row.after = row.before;
      row.result = `rolled back (${ms} ms)`;
    } catch (err) {
      row.result = `ROLLBACK FAILED: ${(err as Error).message.split('\n')[0]}`;
      failed = true;
    }
  }
  ctx.io.err(
    `automatic rollback of ${switched.map((t) => t.name).join(', ')} ${failed ? 'FAILED' : 'done'} in ${((Date.now() - started) / 1000).toFixed(1)}s`,
  );
  return failed ? exitCodes.rollbackFailed : exitCodes.failed;
}

/** `previous`, a release id, a version tag, or a commit prefix (7+ hex), resolved on one server. */
export function resolveTarget(status: TargetStatus, to: string): string | undefined {
  if (to === 'previous') {
    const older = status.good.filter((id) => id < status.current && status.releases.has(id)).sort();
    return older.at(-1);
  }
  if (status.releases.has(to)) return to;
  const matches = [...status.releases.values()].filter(
    (m) => m.version === to || (/^[0-9a-f]{7,40}$/.test(to) && m.commit.startsWith(to)),
  );
  return matches.length === 0
    ? undefined
    : matches
        .map((m) => m.id)
        .sort()
        .at(-1);
}

export async function rollback(
  root: string,
  env: Environment,
  io: Output,
  options: { to: string; lockWaitSeconds: number; force: boolean },
): Promise<number> {
  const ctx: Context = { root, env, io };
  refuseUnpinned(env);
  const statuses = new Map<string, TargetStatus>();
  const chosen = new Map<string, string>();
  const missing: string[] = [];
  for (const target of env.targets) {
    const status = await targetStatus(ctx, target);
    statuses.set(target.name, status);
    const id = resolveTarget(status, options.to);
    if (id === undefined) missing.push(target.name);
    else chosen.set(target.name, id);
  }
  if (missing.length > 0) {
    io.err(
      `refused: no release "${options.to}" on ${missing.join(', ')} (see scripts/rollback.sh --list); nothing was changed`,
    );
    return exitCodes.usage;
  }
  // A release that lacks a contract migration the database already has would read what is gone.
  const first = env.targets[0] as Target;
  const schema = JSON.parse(
    (await agent(ctx, first, 'db-status', ['db-status'], { timeoutMs: 120_000 })).stdout.trim() || '{}',
  ) as { head?: string | null; contract?: string[] };
  const target = statuses.get(first.name)?.releases.get(chosen.get(first.name) ?? '');
  const unknown = (schema.contract ?? []).filter((name) => !(target?.migrations ?? []).includes(name));
  if (unknown.length > 0 && !options.force) {
    io.err(
      `refused: ${options.to} predates contract migration(s) ${unknown.join(', ')} already applied (the database head is ${schema.head}); it would read columns or tables that are gone. Roll forward with a fix instead, or --force to switch anyway; nothing was changed`,
    );
    return exitCodes.schemaRefused;
  }
  const locks = new Locks(ctx);
  await locks.acquire(`rollback-${options.to}`, options.lockWaitSeconds);
  const started = Date.now();
  const rows: Row[] = [];
  let failed = false;
  try {
    for (const target of env.targets) {
      const status = statuses.get(target.name) as TargetStatus;
      const id = chosen.get(target.name) as string;
      const row: Row = {
        target: target.name,
        before: describe(status, status.current),
        after: describe(status, status.current),
        result: 'untouched',
      };
      rows.push(row);
      if (failed) continue;
      if (id === status.current) {
        row.result = 'already there';
        continue;
      }
      try {
        const ms = await activate(ctx, target, id, `rollback --to=${options.to}`);
        row.after = describe(status, id);
        row.result = `rolled back (${ms} ms)`;
      } catch (err) {
        row.result = `FAILED: ${(err as Error).message.split('\n')[0]}`;
        failed = true;
      }
    }
  } finally {
    await locks.release();
  }
  io.out(
    `rollback --to=${options.to} ${failed ? 'FAILED' : 'done'} in ${((Date.now() - started) / 1000).toFixed(1)}s`,
  );
  table(io, rows);
  return failed ? exitCodes.rollbackFailed : exitCodes.ok;
}

export async function list(root: string, env: Environment, io: Output): Promise<number> {
  const ctx: Context = { root, env, io };
  refuseUnpinned(env);
  for (const target of env.targets) {
    const status = await targetStatus(ctx, target);
    io.out(
      `${target.name} (${target.user}@${knownHostsName(target)}:${target.dir})${status.lock === null ? '' : ` LOCKED by ${status.lock}`}`,
    );
    for (const id of [...status.releases.keys()].sort().reverse()) {
      const m = status.releases.get(id) as Manifest;
      const marks = [id === status.current ? 'current' : '', status.good.includes(id) ? 'good' : ''].filter(
        Boolean,
      );
      io.out(
        `  ${id === status.current ? '*' : ' '} ${id}  ${m.version.padEnd(12)} ${m.commit.slice(0, 12)}  migrations ${m.migrationHead || '-'}  ${marks.join(', ')}`,
      );
    }
  }
  return exitCodes.ok;
}
