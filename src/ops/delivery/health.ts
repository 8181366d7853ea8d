import { readFileSync } from 'node:fs';
import type { Environment, Target } from './environment.js';
import { lastLines, records, runAgent, sshFailure } from './ssh.js';

/**
 * scripts/health-check.sh: the launch sequence's pre-flight, one line per check and server, or
 * JSON; the exit code is the number of failed checks. A check that cannot apply yet (no release
 * deployed, no certificate configured) is `skip`, never a pass in disguise; a check nobody answered
 * (no worker, the agent stopped before it) fails.
 */

export interface Check {
  readonly target: string;
  readonly check: string;
  readonly status: 'ok' | 'fail' | 'skip';
  readonly detail: string;
}

/**
 * The lowest Node the servers may run: package.json's `engines.node` (">=X.Y[.Z]"), the one place
 * it is written (the release ships package.json; this file is dist/ops/delivery/ or
 * src/ops/delivery/, three levels below it). Read when first needed, so a range this cannot read
 * fails the health check, not every deploy verb at import.
 */
let minNodeCache: readonly [number, number, number] | undefined;
export function minNode(): readonly [number, number, number] {
  if (minNodeCache !== undefined) return minNodeCache;
  const manifest = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as {
    engines?: { node?: string };
  };
  const range = manifest.engines?.node ?? '';
  const m = /^>=\s*v?(\d+)(?:\.(\d+))?(?:\.(\d+))?$/.exec(range.trim());
  if (m === null)
    throw new Error(`package.json engines.node is "${range}": the health check reads only ">=X.Y[.Z]"`);
  minNodeCache = [Number(m[1]), Number(m[2] ?? 0), Number(m[3] ?? 0)];
  return minNodeCache;
}

export function nodeOk(version: string): boolean {
  const m = /^v?(\d+)\.(\d+)\.(\d+)/.exec(version);
  if (m === null) return false;
  const have = [Number(m[1]), Number(m[2]), Number(m[3])];
  const need = minNode();
  for (let i = 0; i < 3; i++)
    if ((have[i] as number) !== need[i]) return (have[i] as number) > (need[i] as number);
  return true;
}

/**
 * The checks of one server from the agent's `health` output. `complete` false: the agent stopped
 * part way (a missing shared/.env, no Node): only the checks it printed are judged (targetChecks
 * adds a failed `agent` check with the reason) — nothing it did not reach counts as a pass or a skip.
 */
export function evaluate(target: string, stdout: string, now = Date.now(), complete = true): Check[] {
  const checks: Check[] = [];
  const add = (check: string, status: Check['status'], detail: string) =>
    checks.push({ target, check, status, detail });
  const rows = records(stdout);
  const get = (key: string) => rows.find((r) => r[0] === key);
  const disk = get('disk');
  if (disk !== undefined) {
    const [avail, total] = [Number(disk[1]), Number(disk[2])];
    const ratio = total > 0 ? avail / total : 0;
    add(
      'disk',
      ratio >= 0.1 && avail >= 1024 * 1024 ? 'ok' : 'fail',
      `${(avail / 1024 / 1024).toFixed(1)} GiB free (${(ratio * 100).toFixed(0)} %)`,
    );
  }
  const memory = get('memory');
  if (memory !== undefined) {
    const [avail, total] = [Number(memory[1]), Number(memory[2])];
    add(
      'memory',
      total > 0 && avail / total >= 0.1 ? 'ok' : 'fail',
      `${(avail / 1024).toFixed(0)} MiB available of ${(total / 1024).toFixed(0)} MiB`,
    );
  }
  if (!complete && get('envfile') === undefined) return checks;
  const envfile = get('envfile')?.[1] ?? 'missing';
  add(
    'env file',
    envfile === '600' ? 'ok' : 'fail',
    envfile === 'missing'
      ? 'shared/.env is missing'
      : `shared/.env mode ${envfile}${envfile === '600' ? '' : ' (must be 600)'}`,
  );
  if (!complete && get('node') === undefined) return checks;
  const node = get('node')?.[1] ?? 'none';
  add('node', nodeOk(node) ? 'ok' : 'fail', `${node} (needs ≥ ${minNode().join('.')})`);
  if (!complete && get('current') === undefined) return checks;
  const current = get('current')?.[1] ?? '';
  const pm2 = get('pm2')?.[1] ?? 'none';
  if (current === '') {
    add('pm2', 'skip', 'no release deployed yet (PM2 comes with the release)');
    for (const c of ['database', 'redis', 'migrations', 'workers ready'])
      add(c, 'skip', 'no release deployed yet (the deploy checks it with a smoke boot)');
  } else {
    add(
      'pm2',
      pm2 === 'none' ? 'fail' : 'ok',
      pm2 === 'none' ? `no PM2 in ${current}` : `${pm2} (release ${current})`,
    );
    const ready = rows.filter((r) => r[0] === 'ready');
    const bodies = ready.map((r) => {
      try {
        return JSON.parse(r[2] ?? '') as {
          status?: string;
          reason?: string;
          checks?: Record<string, string>;
        };
      } catch {
        return { status: 'no answer', reason: (r[2] ?? '').slice(0, 120) || 'no answer' };
      }
    });
    // Only a worker that answered says anything about the database, Redis or the schema.
    const answered = bodies.filter((b) => b.checks !== undefined);
    const noAnswer = `unknown: no worker answered /ready${ready.length === 0 ? ' (none probed)' : ''}`;
    const first = answered[0];
    const database = first?.checks?.database;
    add('database', database === 'up' ? 'ok' : 'fail', database ?? first?.reason ?? noAnswer);
    // /ready always reports the cache ('up', or 'degraded' when Redis is down or not configured).
    const cache = first?.checks?.cache;
    add(
      'redis',
      cache === 'up' ? 'ok' : 'fail',
      first === undefined ? noAnswer : (cache ?? 'not reported by /ready'),
    );
    const pending = answered.find((b) => /pending migrations|schema/.test(b.reason ?? ''));
    // With the database down the schema was not checked: unknown, which fails.
    const schemaChecked = answered.some((b) => b.checks?.database === 'up');
    add(
      'migrations',
      pending === undefined && schemaChecked ? 'ok' : 'fail',
      pending?.reason ??
        (first === undefined
          ? noAnswer
          : schemaChecked
            ? 'none pending'
            : 'unknown: the database did not answer'),
    );
    const notReady = bodies.map((b, i) => [i, b] as const).filter(([, b]) => b.status !== 'ready');
    add(
      'workers ready',
      ready.length > 0 && notReady.length === 0 ? 'ok' : 'fail',
      ready.length === 0
        ? 'no workers'
        : notReady.length === 0
          ? `${ready.length}/${ready.length}`
          : notReady.map(([i, b]) => `worker ${i}: ${b.reason ?? b.status}`).join('; '),
    );
  }
  const certificate = get('certificate')?.[1];
  // The certificate line comes last: an agent that stopped never reached it.
  if (!complete) return checks;
  if (certificate === undefined) add('certificate', 'skip', 'no TLS_CERT_FILE in shared/.env');
  else {
    const days = Math.floor((Date.parse(certificate) - now) / 86_400_000);
    add('certificate', days >= 14 ? 'ok' : 'fail', `expires ${certificate} (${days} days)`);
  }
  return checks;
}

export async function healthCheck(root: string, env: Environment): Promise<Check[]> {
  const checks: Check[] = [];
  for (const target of env.targets) checks.push(...(await checkTarget(root, env, target)));
  return checks;
}

async function checkTarget(root: string, env: Environment, target: Target): Promise<Check[]> {
  const result = await runAgent(root, env, target, ['health'], { timeoutMs: 120_000 });
  return targetChecks(target, result);
}

/**
 * ssh's own failure (255: connection, authentication, host key) is the one line there is. An agent
 * that ran and stopped (exit 1: no shared/.env, no Node, a bad PM2_INSTANCES) keeps what it printed
 * before stopping — the env-file line comes first, so its failure shows as itself — plus a failed
 * `agent` check with its reason.
 */
export function targetChecks(
  target: Target,
  result: { code: number; stdout: string; stderr: string },
): Check[] {
  const detail = lastLines(result.stderr, 2).replaceAll('\n', ' ') || `exit ${result.code}`;
  if (result.code === sshFailure) return [{ target: target.name, check: 'ssh', status: 'fail', detail }];
  const ssh: Check = {
    target: target.name,
    check: 'ssh',
    status: 'ok',
    detail: `${target.user}@${target.host}:${target.port}`,
  };
  if (result.code === 0) return [ssh, ...evaluate(target.name, result.stdout)];
  return [
    ssh,
    ...evaluate(target.name, result.stdout, Date.now(), false),
    {
      target: target.name,
      check: 'agent',
      status: 'fail',
      detail: `stopped (exit ${result.code}): ${detail}; the checks after it did not run`,
    },
  ];
}
