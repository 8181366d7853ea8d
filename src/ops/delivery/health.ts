import type { Environment, Target } from './environment.js';
import { records, runAgent } from './ssh.js';

/**
 * scripts/health-check.sh: the launch sequence's pre-flight, one line per check and server, or
 * JSON; the exit code is the number of failed checks. A check that cannot apply yet (no release
 * deployed, no certificate configured) is `skip`, never a pass in disguise.
 */

export interface Check {
  readonly target: string;
  readonly check: string;
  readonly status: 'ok' | 'fail' | 'skip';
  readonly detail: string;
}

const minNode = [20, 11];

function nodeOk(version: string): boolean {
  const [major = 0, minor = 0] = version.replace(/^v/, '').split('.').map(Number);
  return major > (minNode[0] ?? 0) || (major === minNode[0] && minor >= (minNode[1] ?? 0));
}

export function evaluate(target: string, stdout: string, now = Date.now()): Check[] {
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
  const envfile = get('envfile')?.[1] ?? 'missing';
  add(
    'env file',
    envfile === '600' ? 'ok' : 'fail',
    envfile === 'missing'
      ? 'shared/.env is missing'
      : `shared/.env mode ${envfile}${envfile === '600' ? '' : ' (must be 600)'}`,
  );
  const node = get('node')?.[1] ?? 'none';
  add('node', nodeOk(node) ? 'ok' : 'fail', `${node} (needs ≥ ${minNode.join('.')})`);
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
    const first = bodies[0];
    const database = first?.checks?.database;
    add('database', database === 'up' ? 'ok' : 'fail', database ?? first?.reason ?? 'no answer');
    const cache = first?.checks?.cache;
    add(
      'redis',
      cache === 'up' || cache === undefined ? (cache === undefined ? 'skip' : 'ok') : 'fail',
      cache ?? 'not configured',
    );
    const pending = bodies.find((b) => /pending migrations|schema/.test(b.reason ?? ''));
    add('migrations', pending === undefined ? 'ok' : 'fail', pending?.reason ?? 'none pending');
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
  if (result.code !== 0)
    return [
      {
        target: target.name,
        check: 'ssh',
        status: 'fail',
        detail: result.stderr.trim().split('\n').slice(-2).join(' ') || `exit ${result.code}`,
      },
    ];
  return [
    {
      target: target.name,
      check: 'ssh',
      status: 'ok',
      detail: `${target.user}@${target.host}:${target.port}`,
    },
    ...evaluate(target.name, result.stdout),
  ];
}
