import { quantile } from '../../lib/histogram.js';

/**
 * The canary's watch window: counters and latency buckets read from every worker's /metrics (by
 * scripts/release-agent.sh `metrics`) at the start and end of the window, for the canary and for the
 * servers still on the old release, compared as deltas. Probe routes (/health, /ready, /metrics)
 * are left out: only what users see counts.
 */

export interface Snapshot {
  readonly requests: number;
  readonly errors: number;
  /** Cumulative count per bucket bound (seconds), summed over routes and workers. */
  readonly buckets: ReadonlyMap<number, number>;
  /** Each worker's process start time (a worker replaced inside the window has a new one). */
  readonly starts: ReadonlyMap<string, number>;
}

const probe = /route="\/(health|ready|metrics)"/;

export function parseMetrics(text: string): Snapshot {
  let requests = 0;
  let errors = 0;
  const buckets = new Map<number, number>();
  const starts = new Map<string, number>();
  let worker = '';
  for (const line of text.split('\n')) {
    if (line.startsWith('### worker ')) {
      worker = line.slice('### worker '.length).trim();
      continue;
    }
    const start = /^process_start_time_seconds (\S+)$/.exec(line);
    if (start !== null) {
      starts.set(worker, Number(start[1]));
      continue;
    }
    if (probe.test(line)) continue;
    const total = /^http_requests_total\{([^}]*)\} (\S+)$/.exec(line);
    if (total !== null) {
      const n = Number(total[2]);
      requests += n;
      if (/status_code="5\d\d"/.test(total[1] ?? '')) errors += n;
      continue;
    }
    const bucket = /^http_request_duration_seconds_bucket\{([^}]*)\} (\S+)$/.exec(line);
    if (bucket !== null) {
      const le = /le="([^"]+)"/.exec(bucket[1] ?? '')?.[1];
      if (le === undefined) continue;
      const bound = le === '+Inf' ? Number.POSITIVE_INFINITY : Number(le);
      buckets.set(bound, (buckets.get(bound) ?? 0) + Number(bucket[2]));
    }
  }
  return { requests, errors, buckets, starts };
}

export interface WindowStats {
  readonly requests: number;
  readonly errors: number;
  readonly errorRatio: number;
  /** Seconds, interpolated within the bucket (as Prometheus histogram_quantile does); null with no traffic. */
  readonly p95: number | null;
  readonly restarts: number;
}

/**
 * Counters restart from zero when a worker is replaced; a negative delta means "a process restarted
 * inside the window": the end value alone is then the best lower bound.
 */
const delta = (end: number, start: number) => (end >= start ? end - start : end);

export function windowStats(start: Snapshot, end: Snapshot): WindowStats {
  const requests = delta(end.requests, start.requests);
  const errors = delta(end.errors, start.errors);
  const bounds = [...end.buckets.keys()].sort((a, b) => a - b);
  const counts = bounds.map((b) => delta(end.buckets.get(b) ?? 0, start.buckets.get(b) ?? 0));
  return {
    requests,
    errors,
    errorRatio: requests === 0 ? 0 : errors / requests,
    p95: quantile(0.95, bounds, counts),
    // A worker that restarted, or does not answer at the end (crashed, restarting).
    restarts: [...start.starts].filter(([w, t]) => end.starts.get(w) !== t).length,
  };
}

export interface Verdict {
  readonly ok: boolean;
  readonly reasons: readonly string[];
}

/** Minimum requests in the window before ratios are compared (a handful of requests says nothing). */
const minRequests = 20;

export function judgeCanary(
  canary: WindowStats,
  baseline: WindowStats | null,
  limits: { maxErrorRatio: number; maxP95Factor: number },
): Verdict {
  const reasons: string[] = [];
  if (canary.restarts > 0) reasons.push(`${canary.restarts} worker restart(s) during the watch`);
  if (canary.requests >= minRequests) {
    const allowed = Math.max(limits.maxErrorRatio, 2 * (baseline?.errorRatio ?? 0));
    if (canary.errorRatio > allowed)
      reasons.push(
        `5xx ratio ${(canary.errorRatio * 100).toFixed(2)} % > ${(allowed * 100).toFixed(2)} % (old release: ${
          baseline === null ? 'n/a' : `${(baseline.errorRatio * 100).toFixed(2)} %`
        })`,
      );
    if (canary.p95 !== null && baseline?.p95 !== null && baseline !== null && baseline.p95 !== null) {
      const allowedP95 = Math.max(0.25, limits.maxP95Factor * baseline.p95);
      if (canary.p95 > allowedP95)
        reasons.push(
          `p95 ${(canary.p95 * 1000).toFixed(0)} ms > ${(allowedP95 * 1000).toFixed(0)} ms (old release ${(baseline.p95 * 1000).toFixed(0)} ms)`,
        );
    }
  }
  return { ok: reasons.length === 0, reasons };
}

export function combine(stats: readonly WindowStats[]): WindowStats | null {
  if (stats.length === 0) return null;
  const requests = stats.reduce((s, x) => s + x.requests, 0);
  const errors = stats.reduce((s, x) => s + x.errors, 0);
  const p95s = stats.map((s) => s.p95).filter((p): p is number => p !== null);
  return {
    requests,
    errors,
    errorRatio: requests === 0 ? 0 : errors / requests,
    p95: p95s.length === 0 ? null : Math.max(...p95s),
    restarts: stats.reduce((s, x) => s + x.restarts, 0),
  };
}
