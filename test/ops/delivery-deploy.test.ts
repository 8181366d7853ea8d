import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Artifact, Manifest } from '../../src/ops/delivery/artifact.js';
import {
  type AgentRunner,
  deploy,
  exitCodes,
  resolveTarget,
  rollback,
  type TargetStatus,
} from '../../src/ops/delivery/deploy.js';
import type { Environment, Target } from '../../src/ops/delivery/environment.js';
import { type AgentResult, RemoteError } from '../../src/ops/delivery/ssh.js';

/**
 * The deploy and rollback sequencing of src/ops/delivery/deploy.ts against fake servers: the verbs
 * take the agent runner as a parameter, and a FakeServer here answers the release agent's commands
 * (scripts/release-agent.sh) from memory, with its lock semantics (held → 75; only the holder's
 * token heartbeats and releases). What is checked is the order of the calls and what is left
 * behind: locks, `current`, the heartbeat. The same verbs over real SSH: test/ops/deploy-*.test.ts.
 */

function manifest(id: string, version: string, migrations: string[] = [], contract: string[] = []): Manifest {
  return {
    id,
    version,
    commit: `${id.slice(-7)}${'0'.repeat(33)}`,
    builtAt: '2026-12-01T00:00:00Z',
    node: 'v24.0.0',
    nodeAbi: '137',
    lockfileHash: 'l'.repeat(64),
    depsHash: 'd'.repeat(64),
    migrations,
    contractMigrations: contract,
    migrationHead: migrations.at(-1) ?? '',
    contentHash: 'c'.repeat(64),
  };
}

const v1 = manifest('20261201T090000Z-aaaaaaa', 'v1', ['001']);
const v2 = manifest('20261201T100000Z-bbbbbbb', 'v2', ['001', '002']);
const v3 = manifest('20261201T110000Z-ccccccc', 'v3', ['001', '002', '003c'], ['003c']);

interface Call {
  readonly at: number;
  readonly target: string;
  readonly args: readonly string[];
  readonly code: number;
}

class FakeServer {
  current = '';
  readonly releases = new Map<string, Manifest>();
  good: string[] = [];
  /** The token of the deployer holding the lock. */
  lock: string | null = null;
  /** Someone else holds the lock until then (ms since the epoch). */
  foreignUntil = 0;
  /** What the database reports (db-status is answered by whichever server is asked). */
  contract: string[] = [];

  constructor(
    readonly name: string,
    releases: Manifest[],
    current: Manifest | undefined,
  ) {
    for (const m of releases) this.releases.set(m.id, m);
    this.current = current?.id ?? '';
    this.good = releases.map((m) => m.id);
  }

  answer(args: readonly string[], artifact: Manifest | undefined): { code: number; stdout: string } {
    const [cmd, a = '', b = ''] = args;
    const ok = (stdout = '') => ({ code: 0, stdout });
    switch (cmd) {
      case 'status':
        return ok(
          [
            `current\t${this.current}`,
            ...[...this.releases.values()].map((m) => `release\t${m.id}\t${JSON.stringify(m)}`),
            ...this.good.map((id) => `good\t${id}`),
            ...(this.lock === null ? [] : ['lock\towner=someone']),
            '',
          ].join('\n'),
        );
      case 'lock':
        if (a === 'acquire') {
          if (Date.now() < this.foreignUntil || (this.lock !== null && this.lock !== b))
            return { code: 75, stdout: 'held\towner=bob@laptop commit=f00 \theartbeat 1s ago\n' };
          this.lock = b;
          return ok('acquired\n');
        }
        if (this.lock !== b) return { code: 75, stdout: 'lost\n' };
        if (a === 'release') this.lock = null;
        return ok(`${a}\n`);
      case 'install':
        if (artifact !== undefined) this.releases.set(artifact.id, artifact);
        return ok(`installed\t${a}\n`);
      case 'switch':
        this.current = a;
        return ok(`switched\tx\t${a}\n`);
      case 'mark-good':
        this.good.push(a);
        return ok();
      case 'db-status':
        return ok(JSON.stringify({ head: this.contract.at(-1) ?? '002', contract: this.contract }));
      default:
        // receive-deps, receive, migrate, smoke, reload, ready, metrics, prune
        return ok();
    }
  }
}

/** A fleet of fake servers behind one AgentRunner, with a log of every call and hooks to bend it. */
class Fleet {
  readonly calls: Call[] = [];
  readonly servers: Map<string, FakeServer>;
  /** Return a result to replace the server's answer (an ssh failure, say); may also wait. */
  hook: (target: string, args: readonly string[]) => Promise<AgentResult | undefined> | undefined = () =>
    undefined;
  artifact: Manifest | undefined;

  constructor(servers: FakeServer[]) {
    this.servers = new Map(servers.map((s) => [s.name, s]));
  }

  readonly run: AgentRunner = async (target: Target, args: readonly string[]) => {
    const server = this.servers.get(target.name) as FakeServer;
    const replaced = await this.hook(target.name, args);
    const result = replaced ?? { ...server.answer(args, this.artifact), stderr: '', ms: 1 };
    this.calls.push({ at: Date.now(), target: target.name, args, code: result.code });
    return result;
  };

  server(name: string): FakeServer {
    return this.servers.get(name) as FakeServer;
  }

  /** "app-1 switch <id>" lines, in order, for the commands named. */
  log(...commands: string[]): string[] {
    return this.calls
      .filter(
        (c) => commands.includes(c.args[0] as string) && !(c.args[0] === 'lock' && c.args[1] === 'heartbeat'),
      )
      .map((c) => `${c.target} ${c.args[0] === 'lock' ? `lock ${c.args[1]}` : c.args.join(' ')}`);
  }

  heartbeats(name: string): Call[] {
    return this.calls.filter((c) => c.target === name && c.args[0] === 'lock' && c.args[1] === 'heartbeat');
  }
}

let work = '';
let knownHosts = '';

before(() => {
  // refuseUnpinned runs ssh-keygen -F on the environment's known_hosts: pin a real key per name.
  work = mkdtempSync(join(tmpdir(), 'shipshape-delivery-'));
  const key = join(work, 'host_key');
  const made = spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key], { encoding: 'utf8' });
  assert.equal(made.status, 0, made.stderr);
  const pub = readFileSync(`${key}.pub`, 'utf8').trim().split(' ').slice(0, 2).join(' ');
  knownHosts = join(work, 'known_hosts');
  writeFileSync(knownHosts, ['app-1', 'app-2', 'app-3'].map((n) => `${n}.test ${pub}\n`).join(''));
});
after(() => rmSync(work, { recursive: true, force: true }));

function environment(names: string[], extra: Partial<Environment> = {}): Environment {
  return {
    name: 'test',
    file: join(work, 'test.json'),
    knownHosts,
    identityFile: null,
    targets: names.map((name) => ({
      name,
      host: `${name}.test`,
      port: 22,
      user: 'deployer',
      dir: '/srv/app',
    })),
    keepReleases: 5,
    readySeconds: 5,
    watchSeconds: 0,
    maxErrorRatio: 0.01,
    maxP95Factor: 2,
    sloMaxErrorRatio: 0.01,
    sloMaxP95Ms: 500,
    lockHeartbeatSeconds: 1,
    lockStaleSeconds: 3,
    ...extra,
  };
}

function output() {
  const out: string[] = [];
  const err: string[] = [];
  return { out, err, io: { out: (l: string) => out.push(l), err: (l: string) => err.push(l) } };
}

function artifactOf(m: Manifest): Artifact {
  return {
    dir: join(work, m.id),
    manifest: m,
    appTar: join(work, 'app.tar'),
    depsTar: join(work, 'deps.tar'),
  };
}

function deployTo(
  fleet: Fleet,
  env: Environment,
  m: Manifest,
  io: ReturnType<typeof output>['io'],
  lockWait = 0,
) {
  fleet.artifact = m;
  return deploy(
    '/nonexistent',
    env,
    io,
    { artifact: artifactOf(m), dryRun: false, maxParallel: 1, lockWaitSeconds: lockWait },
    fleet.run,
  );
}

const pair = () => new Fleet([new FakeServer('app-1', [v1, v2], v2), new FakeServer('app-2', [v1, v2], v2)]);

describe('deploy lock (fake servers)', () => {
  test('the heartbeat starts with the first lock taken: while --lock-wait waits on app-2, app-1 is kept fresh', async () => {
    const fleet = pair();
    fleet.server('app-2').foreignUntil = Date.now() + 2600;
    const { io, out } = output();
    const code = await deployTo(fleet, environment(['app-1', 'app-2']), v3, io, 30);
    assert.equal(code, exitCodes.ok, out.join('\n'));
    assert.ok(out.some((l) => /app-2: the deploy lock is held .*waiting up to/.test(l)));
    const app2Taken = fleet.calls.find(
      (c) => c.target === 'app-2' && c.args[1] === 'acquire' && c.code === 0,
    );
    assert.ok(app2Taken !== undefined);
    const during = fleet.heartbeats('app-1').filter((c) => c.at < app2Taken.at);
    // 2.6 s of waiting at one heartbeat a second: the old code sent none until every lock was held.
    assert.ok(during.length >= 2, `app-1 heartbeats while waiting for app-2: ${during.length}`);
    assert.ok(
      during.every((c) => c.code === 0),
      'each one refreshed the lock',
    );
    assert.equal(fleet.server('app-1').lock, null);
    assert.equal(fleet.server('app-2').lock, null);
  });

  test('an ssh failure while taking a lock (not "held") releases the locks already taken', async () => {
    const fleet = new Fleet([
      new FakeServer('app-1', [v1, v2], v2),
      new FakeServer('app-2', [v1, v2], v2),
      new FakeServer('app-3', [v1, v2], v2),
    ]);
    fleet.hook = (target, args) =>
      target === 'app-3' && args[1] === 'acquire'
        ? Promise.resolve({
            code: 255,
            stdout: '',
            stderr: 'ssh: connect to host app-3.test port 22: Connection refused',
            ms: 1,
          })
        : undefined;
    const { io } = output();
    await assert.rejects(
      deployTo(fleet, environment(['app-1', 'app-2', 'app-3']), v3, io),
      (err: unknown) =>
        err instanceof RemoteError &&
        /app-3: lock failed \(exit 255\).*Connection refused/s.test(err.message),
    );
    assert.deepEqual(
      ['app-1', 'app-2', 'app-3'].map((n) => fleet.server(n).lock),
      [null, null, null],
      'app-1 and app-2 were released',
    );
    assert.deepEqual(fleet.log('lock'), [
      'app-1 lock acquire',
      'app-2 lock acquire',
      'app-3 lock acquire',
      'app-1 lock release',
      'app-2 lock release',
    ]);
    assert.deepEqual(fleet.log('switch', 'receive', 'install'), [], 'nothing was shipped or switched');
  });

  test('held past --lock-wait: exit 3, and the lock already taken on app-1 is released', async () => {
    const fleet = pair();
    fleet.server('app-2').foreignUntil = Date.now() + 60_000;
    const { io } = output();
    await assert.rejects(
      deployTo(fleet, environment(['app-1', 'app-2']), v3, io, 1),
      (err: unknown) => (err as { code?: number }).code === exitCodes.lockHeld,
    );
    assert.equal(fleet.server('app-1').lock, null);
  });

  test('heartbeats that keep failing (ssh errors, not only "taken over") count as a lost lock: no server is switched', async () => {
    const fleet = pair();
    const env = environment(['app-1', 'app-2']);
    fleet.hook = async (target, args) => {
      if (target === 'app-1' && args[1] === 'heartbeat')
        return {
          code: 255,
          stdout: '',
          stderr: 'ssh: connect to host app-1.test: Connection timed out',
          ms: 1,
        };
      // A slow ship: long enough for the heartbeat to fail while it runs (stale after 3 s).
      if (args[0] === 'receive') await sleep(3500);
      return undefined;
    };
    const { io, err } = output();
    const code = await deployTo(fleet, env, v3, io);
    assert.equal(code, exitCodes.failed, err.join('\n'));
    assert.match(
      err.join('\n'),
      /app-1: the deploy lock's heartbeat failed \d+ times in a row \(last one \ds ago; stale after 3s\): ssh: connect to host app-1\.test: Connection timed out/,
    );
    assert.deepEqual(fleet.log('switch', 'migrate'), [], 'stopped before migrations and any switch');
    assert.deepEqual([fleet.server('app-1').current, fleet.server('app-2').current], [v2.id, v2.id]);
    assert.equal(fleet.server('app-2').lock, null);
  });
});

describe('interrupted deploy (fake servers)', () => {
  test("SIGINT during app-2's smoke boot: app-1 is switched back, app-2 never switched, every lock released, exit 1", async () => {
    const fleet = pair();
    fleet.hook = async (target, args) => {
      if (target === 'app-2' && args[0] === 'smoke') {
        process.emit('SIGINT', 'SIGINT');
        await sleep(200);
      }
      return undefined;
    };
    const { io, err } = output();
    const code = await deployTo(fleet, environment(['app-1', 'app-2']), v3, io);
    assert.equal(code, exitCodes.failed, err.join('\n'));
    assert.match(err.join('\n'), /SIGINT: stopping the deploy/);
    assert.match(err.join('\n'), /deploy failed: app-2: stopped before the switch, interrupted by SIGINT/);
    assert.match(err.join('\n'), /automatic rollback of app-1 done/);
    assert.deepEqual(fleet.log('switch'), [
      `app-1 switch ${v3.id} deploy v3`,
      `app-1 switch ${v2.id} automatic rollback`,
    ]);
    assert.deepEqual([fleet.server('app-1').current, fleet.server('app-2').current], [v2.id, v2.id]);
    assert.deepEqual([fleet.server('app-1').lock, fleet.server('app-2').lock], [null, null]);
    assert.equal(process.listenerCount('SIGINT'), 0, 'the handler is gone with the deploy');
  });

  test('SIGTERM while --lock-wait waits: exit 1 at once, the lock already taken released, nothing shipped', async () => {
    const fleet = pair();
    fleet.server('app-2').foreignUntil = Date.now() + 60_000;
    const { io, err } = output();
    const started = Date.now();
    setTimeout(() => process.emit('SIGTERM', 'SIGTERM'), 500).unref();
    const code = await deployTo(fleet, environment(['app-1', 'app-2']), v3, io, 60);
    assert.equal(code, exitCodes.failed, err.join('\n'));
    assert.ok(Date.now() - started < 10_000, 'it did not wait out the 60 s');
    assert.match(
      err.join('\n'),
      /deploy stopped before any change: app-2: the wait for the deploy lock was interrupted by SIGTERM; no lock is left behind/,
    );
    assert.equal(fleet.server('app-1').lock, null);
    assert.deepEqual(fleet.log('receive', 'switch'), []);
    assert.equal(process.listenerCount('SIGTERM'), 0);
  });
});

describe('rollback (fake servers)', () => {
  const rollbackOn = (fleet: Fleet, env: Environment, to: string, force = false) => {
    const o = output();
    return rollback('/nonexistent', env, o.io, { to, lockWaitSeconds: 0, force }, fleet.run).then((code) => ({
      code,
      ...o,
    }));
  };

  test('the lock comes first: no server state is read, no target resolved, before every lock is held', async () => {
    const fleet = new Fleet([
      new FakeServer('app-1', [v1, v2, v3], v3),
      new FakeServer('app-2', [v1, v2, v3], v3),
    ]);
    const r = await rollbackOn(fleet, environment(['app-1', 'app-2']), 'previous');
    assert.equal(r.code, exitCodes.ok, r.err.join('\n'));
    assert.deepEqual(fleet.log('lock', 'status', 'db-status', 'switch').slice(0, 5), [
      'app-1 lock acquire',
      'app-2 lock acquire',
      'app-1 status',
      'app-2 status',
      'app-1 db-status',
    ]);
    assert.deepEqual([fleet.server('app-1').current, fleet.server('app-2').current], [v2.id, v2.id]);
    assert.deepEqual([fleet.server('app-1').lock, fleet.server('app-2').lock], [null, null]);
  });

  test('--to=previous meaning different releases on different servers is refused (exit 2, nothing changed); --force switches each to its own', async () => {
    const fleet = new Fleet([
      new FakeServer('app-1', [v1, v2, v3], v3),
      new FakeServer('app-2', [v1, v2, v3], v3),
    ]);
    // v2 never passed a whole deploy on app-2: its previous good release is v1.
    fleet.server('app-2').good = [v1.id, v3.id];
    const env = environment(['app-1', 'app-2']);
    const refused = await rollbackOn(fleet, env, 'previous');
    assert.equal(refused.code, exitCodes.usage);
    assert.match(
      refused.err.join('\n'),
      new RegExp(
        `refused: --to=previous resolves to different releases: app-1 → ${v2.id} \\(v2\\), app-2 → ${v1.id} \\(v1\\)\\. Name one release .*nothing was changed`,
      ),
    );
    assert.deepEqual(fleet.log('switch', 'reload'), []);
    assert.deepEqual(
      [fleet.server('app-1').lock, fleet.server('app-2').lock],
      [null, null],
      'locks released',
    );
    const forced = await rollbackOn(fleet, env, 'previous', true);
    assert.equal(forced.code, exitCodes.ok, forced.err.join('\n'));
    assert.deepEqual([fleet.server('app-1').current, fleet.server('app-2').current], [v2.id, v1.id]);
  });

  test("every server's target is checked against the schema, not only the first's (exit 5, nothing changed)", async () => {
    // The same release id on both, but app-2's copy describes it without the contract migration the
    // database has applied: what each server says it would run is what counts.
    const v4 = manifest('20261201T120000Z-ddddddd', 'v4', ['001', '002', '003c'], ['003c']);
    const v4without = { ...v4, migrations: ['001', '002'], contractMigrations: [] };
    const fleet = new Fleet([
      new FakeServer('app-1', [v3, v4], v3),
      new FakeServer('app-2', [v3, v4without], v3),
    ]);
    fleet.server('app-1').contract = ['003c'];
    const r = await rollbackOn(fleet, environment(['app-1', 'app-2']), 'v4');
    assert.equal(r.code, exitCodes.schemaRefused, r.out.join('\n'));
    assert.match(
      r.err.join('\n'),
      /refused: v4 predates contract migration\(s\) 003c already applied .*\(on app-2\)\..*nothing was changed/,
    );
    assert.deepEqual(fleet.log('switch'), []);
    assert.deepEqual([fleet.server('app-1').lock, fleet.server('app-2').lock], [null, null]);
  });

  test('a target one server lacks: exit 2, nothing switched, the locks released', async () => {
    const fleet = new Fleet([new FakeServer('app-1', [v1, v2], v2), new FakeServer('app-2', [v2], v2)]);
    const r = await rollbackOn(fleet, environment(['app-1', 'app-2']), 'v1');
    assert.equal(r.code, exitCodes.usage);
    assert.match(r.err.join('\n'), /refused: no release "v1" on app-2 .*nothing was changed/);
    assert.deepEqual(fleet.log('switch'), []);
    assert.deepEqual([fleet.server('app-1').lock, fleet.server('app-2').lock], [null, null]);
  });
});

describe('resolveTarget', () => {
  const status = (releases: Manifest[], current: Manifest, good: Manifest[]): TargetStatus => ({
    current: current.id,
    releases: new Map(releases.map((m) => [m.id, m])),
    good: good.map((m) => m.id),
    deps: new Set(),
    lock: null,
  });
  const v2again = manifest('20261201T103000Z-bbbbbbb', 'v2', ['001', '002']);

  test('previous: the newest good release older than current that is still installed', () => {
    assert.equal(resolveTarget(status([v1, v2, v3], v3, [v1, v2, v3]), 'previous'), v2.id);
    assert.equal(resolveTarget(status([v1, v2, v3], v3, [v1, v3]), 'previous'), v1.id, 'v2 not good');
    assert.equal(resolveTarget(status([v1, v3], v3, [v1, v2, v3]), 'previous'), v1.id, 'v2 pruned');
    assert.equal(
      resolveTarget(status([v1, v2, v3], v1, [v1, v2, v3]), 'previous'),
      undefined,
      'nothing older',
    );
    assert.equal(resolveTarget(status([v1, v2, v3], v3, [v3]), 'previous'), undefined);
  });

  test('a release id, a version tag (the newest build of it), a commit prefix of 7+ hex; anything else is unknown', () => {
    const s = status([v1, v2, v2again, v3], v3, [v1, v2, v3]);
    assert.equal(resolveTarget(s, v1.id), v1.id);
    assert.equal(resolveTarget(s, 'v2'), v2again.id);
    assert.equal(resolveTarget(s, 'aaaaaaa'), v1.id);
    assert.equal(resolveTarget(s, v3.commit), v3.id);
    assert.equal(resolveTarget(s, 'aaaaaa'), undefined, 'six hex digits are not a commit prefix');
    assert.equal(resolveTarget(s, 'v9.9.9'), undefined);
    assert.equal(resolveTarget(s, '20991231T000000Z-0000000'), undefined);
  });
});
