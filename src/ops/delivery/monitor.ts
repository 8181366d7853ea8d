import { setTimeout as sleep } from 'node:timers/promises';
import type { Environment, Target } from './environment.js';
import { records, runAgent } from './ssh.js';
import { combine, parseMetrics, type Snapshot, type WindowStats, windowStats } from './watch.js';

/**
 * `scripts/monitor-traffic.sh --env NAME` (the launch sequence's "monitor traffic" step): the same
 * environment file as deploy.sh, every server watched over SSH for a bounded window — each worker's
 * /ready and /metrics sampled every `intervalSeconds` (scripts/release-agent.sh `ready`, `metrics`)
 * — then one table: requests/s, 5xx ratio, p95 per server and for the whole service. Exit 1 when an
 * SLO is breached: a 5xx ratio or p95 above the limits (only with enough requests to say so), a
 * worker not ready in a sample, a worker restarted inside the window, or a server that did not
 * answer. docs/decisions/0101-monitor-traffic-over-ssh.md.
 */

export interface MonitorOptions {
  readonly seconds: number;
  readonly intervalSeconds: number;
  readonly maxErrorRatio: number;
  readonly maxP95Ms: number;
}

export interface ServerWindow {
  readonly target: string;
  readonly stats: WindowStats | null;
  readonly seconds: number;
  readonly workers: number;
  /** Samples in which some worker did not answer /ready with 200. */
  readonly notReady: number;
  readonly samples: number;
  readonly unreachable: string | null;
}

/** Below this many requests in the window a ratio or a p95 says nothing (as the canary watch). */
export const minRequests = 20;

export function breaches(
  rows: readonly ServerWindow[],
  limits: Pick<MonitorOptions, 'maxErrorRatio' | 'maxP95Ms'>,
): string[] {
  const out: string[] = [];
  for (const row of rows) {
    if (row.unreachable !== null) {
      out.push(`${row.target}: no answer (${row.unreachable})`);
      continue;
    }
    const s = row.stats as WindowStats;
    if (row.notReady > 0)
      out.push(`${row.target}: a worker was not ready in ${row.notReady} of ${row.samples} samples`);
    if (s.restarts > 0) out.push(`${row.target}: ${s.restarts} worker restart(s) in the window`);
    if (s.requests < minRequests) continue;
    if (s.errorRatio > limits.maxErrorRatio)
      out.push(
        `${row.target}: 5xx ratio ${(s.errorRatio * 100).toFixed(2)} % > ${(limits.maxErrorRatio * 100).toFixed(2)} %`,
      );
    if (s.p95 !== null && s.p95 * 1000 > limits.maxP95Ms)
      out.push(`${row.target}: p95 ${Math.round(s.p95 * 1000)} ms > ${limits.maxP95Ms} ms`);
  }
  return out;
}

function cells(name: string, s: WindowStats | null, seconds: number, extra: string): string[] {
  if (s === null) return [name, '-', '-', '-', '-', extra];
  return [
    name,
    (s.requests / Math.max(seconds, 0.001)).toFixed(1),
    String(s.requests),
    s.requests === 0 ? '-' : `${(s.errorRatio * 100).toFixed(2)} %`,
    s.p95 === null ? '-' : `${Math.round(s.p95 * 1000)} ms`,
    extra,
  ];
}

export function renderTable(rows: readonly ServerWindow[]): string[] {
  const lines: string[][] = [['server', 'req/s', 'requests', '5xx', 'p95', 'workers']];
  for (const r of rows)
    lines.push(
      cells(
        r.target,
        r.stats,
        r.seconds,
        r.unreachable === null
          ? `${r.workers} (${r.notReady === 0 ? 'ready in every sample' : `not ready in ${r.notReady}/${r.samples}`}${
              (r.stats?.restarts ?? 0) > 0 ? `, ${r.stats?.restarts} restarted` : ''
            })`
          : `UNREACHABLE: ${r.unreachable}`,
      ),
    );
  const reachable = rows.filter((r) => r.stats !== null);
  const all = combine(reachable.map((r) => r.stats as WindowStats));
  // The service's p95 is the worst server's (buckets are not summed across servers here).
  lines.push(
    cells(
      'all',
      all,
      Math.max(0.001, ...reachable.map((r) => r.seconds)),
      `${reachable.length}/${rows.length} servers`,
    ),
  );
  const width = (i: number) => Math.max(...lines.map((l) => (l[i] ?? '').length));
  return lines.map((l) =>
    l
      .map((c, i) => (i === 0 || i === l.length - 1 ? c.padEnd(width(i)) : c.padStart(width(i))))
      .join('  ')
      .trimEnd(),
  );
}

interface Sample {
  readonly at: number;
  readonly snapshot: Snapshot;
  readonly workers: number;
  readonly ready: boolean;
}

async function sample(root: string, env: Environment, target: Target): Promise<Sample> {
  const ready = await runAgent(root, env, target, ['ready'], { timeoutMs: 30_000 });
  const workers = records(ready.stdout).filter((r) => r[0] === 'worker');
  // `ready` exits with the number of workers not ready; anything else (no release, SSH) is an error.
  if (workers.length === 0)
    throw new Error(ready.stderr.trim().split('\n').at(-1) || `ready exited ${ready.code}`);
  const metrics = await runAgent(root, env, target, ['metrics'], { timeoutMs: 30_000 });
  if (metrics.code !== 0)
    throw new Error(metrics.stderr.trim().split('\n').at(-1) || `metrics exited ${metrics.code}`);
  return {
    at: Date.now(),
    snapshot: parseMetrics(metrics.stdout),
    workers: workers.length,
    ready: ready.code === 0,
  };
}

async function watchServer(
  root: string,
  env: Environment,
  target: Target,
  options: MonitorOptions,
  progress: (target: string, s: WindowStats, seconds: number) => void,
): Promise<ServerWindow> {
  const samples: Sample[] = [];
  // The window runs from the first sample (an SSH round trip can take seconds on a busy server)
  // and always ends with a second one, so it measures `seconds` of traffic.
  let end = Number.POSITIVE_INFINITY;
  try {
    for (;;) {
      const s = await sample(root, env, target);
      samples.push(s);
      const first = samples[0] as Sample;
      if (samples.length === 1) end = s.at + options.seconds * 1000;
      else {
        progress(target.name, windowStats(first.snapshot, s.snapshot), (s.at - first.at) / 1000);
        if (Date.now() >= end) break;
      }
      await sleep(Math.min(options.intervalSeconds * 1000, Math.max(0, end - Date.now())));
    }
  } catch (err) {
    return {
      target: target.name,
      stats: null,
      seconds: 0,
      workers: 0,
      notReady: 0,
      samples: samples.length,
      unreachable: (err as Error).message,
    };
  }
  const first = samples[0] as Sample;
  const last = samples.at(-1) as Sample;
  return {
    target: target.name,
    stats: windowStats(first.snapshot, last.snapshot),
    seconds: (last.at - first.at) / 1000,
    workers: last.workers,
    notReady: samples.filter((s) => !s.ready).length,
    samples: samples.length,
    unreachable: null,
  };
}

export async function monitorTraffic(
  root: string,
  env: Environment,
  io: { out(line: string): void },
  options: MonitorOptions,
): Promise<{ rows: ServerWindow[]; breaches: string[] }> {
  io.out(
    `monitoring ${env.name} (${env.targets.map((t) => t.name).join(', ')}) for ${options.seconds}s, a sample every ${options.intervalSeconds}s; SLO: 5xx ≤ ${(options.maxErrorRatio * 100).toFixed(2)} %, p95 ≤ ${options.maxP95Ms} ms, every worker ready, no restarts`,
  );
  const progress = (name: string, s: WindowStats, seconds: number) =>
    io.out(
      `  ${name}  +${seconds.toFixed(0)}s  ${(s.requests / Math.max(seconds, 0.001)).toFixed(1)} req/s  ${s.errors} 5xx  p95 ${s.p95 === null ? '-' : `${Math.round(s.p95 * 1000)} ms`}`,
    );
  const rows = await Promise.all(env.targets.map((t) => watchServer(root, env, t, options, progress)));
  for (const line of renderTable(rows)) io.out(line);
  return { rows, breaches: breaches(rows, options) };
}
