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

export interface RunOptions {
  readonly stdinFile?: string;
  readonly timeoutMs?: number;
}

/**
 * Runs one agent command on one server. The verbs take it as a parameter (default: over SSH,
 * ssh.ts runAgent) so the sequencing — locks, rollback order, refusals — is tested without servers
 * (test/ops/delivery-*.test.ts); the real thing is tested over SSH in test/ops/deploy-*.test.ts.
 */
export type AgentRunner = (
  target: Target,
  args: readonly string[],
  options: RunOptions,
) => Promise<AgentResult>;

export function sshRunner(root: string, env: Environment): AgentRunner {
  return (target, args, options) => runAgent(root, env, target, args, options);
}

interface Context {
  readonly env: Environment;
  readonly io: Output;
  readonly run: AgentRunner;
  /**
   * A deploy's: aborted by SIGINT/SIGTERM. A step that has started is let finish (killing a
   * switch, reload or smoke boot halfway would leave the server in between); the next one is not
   * started. Switching back and releasing the locks use a context without it.
   */
  readonly signal?: AbortSignal;
}

function interrupted(ctx: Context, what: string): DeployFailure {
  return new DeployFailure(`${what} interrupted by ${String(ctx.signal?.reason)}`, exitCodes.failed);
}

async function agent(
  ctx: Context,
  target: Target,
  step: string,
  args: string[],
  options: { stdinFile?: string; timeoutMs?: number; allow?: number[] } = {},
): Promise<AgentResult> {
  if (ctx.signal?.aborted === true) throw interrupted(ctx, `${target.name}: stopped before ${step},`);
  const result = await ctx.run(target, args, {
    ...(options.stdinFile === undefined ? {} : { stdinFile: options.stdinFile }),
    ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
  });
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

/** Heartbeats in a row that may fail (ssh down, timeout) before the lock counts as lost. */
const heartbeatFailuresAllowed = 2;

class Locks {
  private readonly token = randomBytes(16).toString('hex');
  private readonly held: Target[] = [];
  private timer: NodeJS.Timeout | undefined;
  private beating: Promise<void> | undefined;
  /** Per held target: failed heartbeats in a row, and when one last succeeded (or was taken). */
  private readonly health = new Map<string, { failures: number; okAt: number }>();
  lost: string | null = null;

  constructor(private readonly ctx: Context) {}

  /**
   * Every target's lock, in the environment's order (so two deployers cannot deadlock). The
   * heartbeat runs from the first lock taken: while --lock-wait waits on server 2, server 1's lock
   * must not go stale under a live holder. Any failure (held past the wait, ssh, host key, an
   * interrupt) releases what was taken before it is rethrown.
   */
  async acquire(commit: string, waitSeconds: number): Promise<void> {
    const owner = `${userInfo().username}@${hostname()} pid ${process.pid}${
      process.env.GITHUB_RUN_ID === undefined ? '' : ` run ${process.env.GITHUB_RUN_ID}`
    }`;
    const deadline = Date.now() + waitSeconds * 1000;
    this.timer ??= setInterval(() => {
      // One heartbeat round at a time: a slow one (ssh timeouts) must not pile up behind itself.
      this.beating ??= this.beat().finally(() => {
        this.beating = undefined;
      });
    }, this.ctx.env.lockHeartbeatSeconds * 1000);
    try {
      for (const target of this.ctx.env.targets)
        await this.acquireOne(target, owner, commit, deadline, waitSeconds);
    } catch (err) {
      await this.release();
      throw err;
    }
  }

  private async acquireOne(
    target: Target,
    owner: string,
    commit: string,
    deadline: number,
    waitSeconds: number,
  ): Promise<void> {
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
        this.health.set(target.name, { failures: 0, okAt: Date.now() });
        return;
      }
      if (Date.now() >= deadline)
        throw new DeployFailure(
          `${target.name}: the deploy lock is held (${holder.trim()}; ${age}); ${
            waitSeconds > 0 ? `waited ${waitSeconds}s; ` : ''
          }try again later or use --lock-wait SECONDS`,
          exitCodes.lockHeld,
        );
      // A lock already taken that was lost while this one is waited for: stop now.
      this.check();
      if (!said)
        this.ctx.io.out(
          `${target.name}: the deploy lock is held (${holder.trim()}; ${age}); waiting up to ${Math.ceil((deadline - Date.now()) / 1000)}s`,
        );
      said = true;
      await sleep(Math.min(2000, Math.max(200, deadline - Date.now())), undefined, {
        ...(this.ctx.signal === undefined ? {} : { signal: this.ctx.signal }),
      }).catch(() => {
        throw interrupted(this.ctx, `${target.name}: the wait for the deploy lock was`);
      });
    }
  }

  /**
   * 75 means another deployer holds it now. Other failures (ssh down, a timeout) are counted: after
   * heartbeatFailuresAllowed + 1 in a row, or once the last good heartbeat is so old that the lock
   * may be reclaimed before the next one, the lock counts as lost — carrying on would be deploying
   * without it.
   */
  private async beat(): Promise<void> {
    const { lockStaleSeconds, lockHeartbeatSeconds } = this.ctx.env;
    for (const target of [...this.held]) {
      const result = await this.ctx.run(target, ['lock', 'heartbeat', this.token], { timeoutMs: 30_000 });
      const health = this.health.get(target.name) ?? { failures: 0, okAt: Date.now() };
      this.health.set(target.name, health);
      if (result.code === 0) {
        health.failures = 0;
        health.okAt = Date.now();
      } else if (result.code === 75) this.lost ??= `${target.name}: the deploy lock was taken over`;
      else {
        health.failures++;
        const age = (Date.now() - health.okAt) / 1000;
        if (health.failures > heartbeatFailuresAllowed || age >= lockStaleSeconds - lockHeartbeatSeconds)
          this.lost ??= `${target.name}: the deploy lock's heartbeat failed ${health.failures} times in a row (last one ${Math.round(age)}s ago; stale after ${lockStaleSeconds}s): ${lastLines(result.stderr, 2) || `exit ${result.code}`}`;
      }
    }
  }

  check(): void {
    if (this.lost !== null) throw new DeployFailure(this.lost, exitCodes.failed);
  }

  /** Releases every lock taken (never interrupted: a lock left behind blocks the next deploy). */
  async release(): Promise<void> {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    await this.beating;
    for (const target of this.held.splice(0))
      await this.ctx.run(target, ['lock', 'release', this.token], { timeoutMs: 30_000 });
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
    if (ctx.signal?.aborted === true) throw interrupted(ctx, `${canary.name}: the canary watch was`);
    const ready = await ctx.run(canary, ['ready'], { timeoutMs: 30_000 });
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

/**
 * Until the returned function is called, SIGINT and SIGTERM (Ctrl-C, a cancelled CI job) abort
 * `controller` instead of killing the process (Node's default): the deploy starts no further step,
 * switches back what it switched and releases its locks, exit 1 (4 if switching back failed). A
 * Ctrl-C also reaches the ssh of the step in flight (same process group), which then fails at
 * once. Further signals while that runs are only reported (kill -9 still works; its locks then go
 * stale after lockStaleSeconds).
 */
function onInterrupt(io: Output, controller: AbortController): () => void {
  const onSignal = (signal: NodeJS.Signals) => {
    if (controller.signal.aborted) {
      io.err(`${signal} again: still switching back and releasing the deploy locks; wait for it`);
      return;
    }
    io.err(`${signal}: stopping the deploy; every server already switched is switched back`);
    controller.abort(signal);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return () => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  };
}

export async function deploy(
  root: string,
  env: Environment,
  io: Output,
  options: DeployOptions,
  run: AgentRunner = sshRunner(root, env),
): Promise<number> {
  refuseUnpinned(env);
  const controller = new AbortController();
  // Forward steps carry the signal; switching back (rollBack) runs with `calm`, which an interrupt
  // does not stop, and Locks.release never looks at it.
  const calm: Context = { env, io, run };
  const ctx: Context = { ...calm, signal: controller.signal };
  const { manifest } = options.artifact;
  const started = Date.now();
  io.out(
    `deploy ${manifest.id} (${manifest.version}, commit ${manifest.commit.slice(0, 12)}, Node ${manifest.node}, migrations up to ${manifest.migrationHead || 'none'}) to ${env.name}: ${env.targets.map((t) => t.name).join(', ')}; canary ${env.targets[0]?.name}, then ${options.maxParallel} at a time`,
  );
  if (options.dryRun) {
    for (const target of env.targets) {
      const status = await targetStatus(calm, target);
      io.out(
        `  ${target.name}: current ${describe(status, status.current)}; would ${status.deps.has(manifest.depsHash) ? 'reuse' : 'ship'} dependencies; ${status.lock === null ? 'unlocked' : `locked by ${status.lock}`}`,
      );
    }
    io.out('dry run: nothing was changed');
    return exitCodes.ok;
  }
  // Every server answers over its pinned key (read-only) before anything is locked or changed.
  for (const target of env.targets) await targetStatus(calm, target);
  const locks = new Locks(ctx);
  const stopListening = onInterrupt(io, controller);
  try {
    await locks.acquire(manifest.commit, options.lockWaitSeconds);
  } catch (err) {
    // acquire released whatever it had taken.
    stopListening();
    if (!controller.signal.aborted) throw err;
    io.err(`deploy stopped before any change: ${(err as Error).message}; no lock is left behind`);
    return exitCodes.failed;
  }
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
        // Checked here too, so a server interrupted before its switch is not "switched back".
        if (controller.signal.aborted) throw interrupted(ctx, `${target.name}: stopped before the switch,`);
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
    io.err(
      `deploy failed: ${controller.signal.aborted && !/interrupted by/.test((err as Error).message) ? `interrupted by ${String(controller.signal.reason)}: ` : ''}${(err as Error).message}`,
    );
    const code = await rollBack(calm, switched, before, rows);
    table(io, [...rows.values()]);
    if (err instanceof DeployFailure && err.code !== exitCodes.failed && code === exitCodes.failed)
      return err.code;
    return code;
  } finally {
    await locks.release();
    stopListening();
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

/**
 * Under the lock, in this order: every server's state, its target, the refusals (a target missing
 * somewhere; servers resolving to different releases; a target older than an applied contract
 * migration, checked for every server's target), then the switches. A refusal changes nothing.
 */
export async function rollback(
  root: string,
  env: Environment,
  io: Output,
  options: { to: string; lockWaitSeconds: number; force: boolean },
  run: AgentRunner = sshRunner(root, env),
): Promise<number> {
  const ctx: Context = { env, io, run };
  refuseUnpinned(env);
  // The lock first: what is current, and so what `previous` means, must not change under us.
  const locks = new Locks(ctx);
  await locks.acquire(`rollback-${options.to}`, options.lockWaitSeconds);
  try {
    return await rollbackLocked(ctx, locks, options);
  } finally {
    await locks.release();
  }
}

async function rollbackLocked(
  ctx: Context,
  locks: Locks,
  options: { to: string; force: boolean },
): Promise<number> {
  const { env, io } = ctx;
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
  // `previous` (or a tag built twice) can mean another release on each server: a mixed fleet is
  // not what a rollback promises, so name one release, or --force it.
  const distinct = new Set(chosen.values());
  if (distinct.size > 1 && !options.force) {
    io.err(
      `refused: --to=${options.to} resolves to different releases: ${[...chosen].map(([name, id]) => `${name} → ${describe(statuses.get(name) as TargetStatus, id)}`).join(', ')}. Name one release (--to=<id>), or --force to switch each server to its own; nothing was changed`,
    );
    return exitCodes.usage;
  }
  // A release that lacks a contract migration the database already has would read what is gone:
  // every server's target is checked (one database, read once).
  const first = env.targets[0] as Target;
  const schema = JSON.parse(
    (await agent(ctx, first, 'db-status', ['db-status'], { timeoutMs: 120_000 })).stdout.trim() || '{}',
  ) as { head?: string | null; contract?: string[] };
  const unknown = new Set<string>();
  const refusedOn: string[] = [];
  for (const target of env.targets) {
    const manifest = statuses.get(target.name)?.releases.get(chosen.get(target.name) ?? '');
    const lacking = (schema.contract ?? []).filter((name) => !(manifest?.migrations ?? []).includes(name));
    for (const name of lacking) unknown.add(name);
    if (lacking.length > 0) refusedOn.push(target.name);
  }
  if (unknown.size > 0 && !options.force) {
    io.err(
      `refused: ${options.to} predates contract migration(s) ${[...unknown].join(', ')} already applied (the database head is ${schema.head}); it would read columns or tables that are gone${env.targets.length > 1 ? ` (on ${refusedOn.join(', ')})` : ''}. Roll forward with a fix instead, or --force to switch anyway; nothing was changed`,
    );
    return exitCodes.schemaRefused;
  }
  const started = Date.now();
  const rows: Row[] = [];
  let failed = false;
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
      locks.check();
      const ms = await activate(ctx, target, id, `rollback --to=${options.to}`);
      row.after = describe(status, id);
      row.result = `rolled back (${ms} ms)`;
    } catch (err) {
      row.result = `FAILED: ${(err as Error).message.split('\n')[0]}`;
      failed = true;
    }
  }
  io.out(
    `rollback --to=${options.to} ${failed ? 'FAILED' : 'done'} in ${((Date.now() - started) / 1000).toFixed(1)}s`,
  );
  table(io, rows);
  return failed ? exitCodes.rollbackFailed : exitCodes.ok;
}

export async function list(
  root: string,
  env: Environment,
  io: Output,
  run: AgentRunner = sshRunner(root, env),
): Promise<number> {
  const ctx: Context = { env, io, run };
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
