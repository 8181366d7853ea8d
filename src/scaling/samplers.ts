import { request } from 'node:http';
import { cpus } from 'node:os';
import { quantile } from '../lib/histogram.js';
import type { Instance, Sampler } from './autoscaler.js';
import { type CpuTimes, cpuUtilisation, memoryUsed, readCpuTimes, readMemory } from './host-signals.js';
import type { InstanceSample, MetricName } from './policy.js';

/**
 * Samplers: where the policy's numbers come from. Each instance's own /metrics (the service
 * exports event-loop delay, in-flight requests, pool waiting and its CPU counter), and the host's
 * /proc/stat and memory. Counters (CPU seconds) become rates, and the event-loop delay histogram a
 * p99, from the previous scrape of the same instance; an instance seen for the first time has no
 * CPU or event-loop value yet (missing, not zero: the first scrape would cover its boot).
 */

/** Sums of the samples of each metric family in a Prometheus text exposition (labels summed away). */
export function parsePrometheusText(text: string): Map<string, number> {
  const sums = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (match === null) continue;
    const value = Number(match[3]);
    if (!Number.isFinite(value)) continue;
    const name = match[1] as string;
    sums.set(name, (sums.get(name) ?? 0) + value);
  }
  return sums;
}

/** The service's metric names for each policy input (src/infra/metrics.ts, database-metrics.ts, prom-client). */
export const serviceMetricNames = {
  cpuSeconds: 'process_cpu_seconds_total',
  /** A histogram: the p99 is taken from the difference of two scrapes (src/infra/runtime-metrics.ts). */
  eventLoopDelay: 'shipshape_eventloop_delay_seconds',
  inFlight: 'http_requests_in_flight',
  poolWaiting: 'db_pool_waiting_requests',
} as const;

export interface ScrapedInstance extends Instance {
  /** The instance's own /metrics URL. */
  readonly metricsUrl?: string;
}

export type Fetcher = (url: string, token: string | undefined) => Promise<string>;

/** GET a /metrics page over HTTP (the workers' metrics ports are plain HTTP on a private address). */
export const httpFetch: Fetcher = (url, token) =>
  new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: 'GET',
        timeout: 5000,
        headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk) => {
          body += chunk;
        });
        res.on('end', () =>
          res.statusCode === 200 ? resolve(body) : reject(new Error(`${url}: HTTP ${res.statusCode}`)),
        );
      },
    );
    req.once('timeout', () => req.destroy(new Error(`${url}: timed out`)));
    req.once('error', reject);
    req.end();
  });

/**
 * A histogram's cumulative bucket counts in a Prometheus text exposition, by upper bound (`+Inf`
 * as Infinity), summed over any other labels; sorted by bound.
 */
export function parseHistogramBuckets(text: string, name: string): [number, number][] {
  const counts = new Map<number, number>();
  const prefix = `${name}_bucket{`;
  for (const line of text.split('\n')) {
    if (!line.startsWith(prefix)) continue;
    const match = /le="([^"]+)"[^}]*\}\s+(\S+)/.exec(line);
    if (match === null) continue;
    const le = match[1] === '+Inf' ? Number.POSITIVE_INFINITY : Number(match[1]);
    const count = Number(match[2]);
    if (Number.isNaN(le) || !Number.isFinite(count)) continue;
    counts.set(le, (counts.get(le) ?? 0) + count);
  }
  return [...counts.entries()].sort((a, b) => a[0] - b[0]);
}

/**
 * The observations between two scrapes of the same histogram (same bounds, counts never lower);
 * undefined when they are not comparable — the process restarted, so its counts began again.
 */
export function bucketDelta(
  before: readonly (readonly [number, number])[],
  after: readonly (readonly [number, number])[],
): [number, number][] | undefined {
  if (before.length !== after.length || before.length === 0) return undefined;
  const delta: [number, number][] = [];
  for (let i = 0; i < after.length; i++) {
    const [le, count] = after[i] as readonly [number, number];
    const [leBefore, countBefore] = before[i] as readonly [number, number];
    if (le !== leBefore || count < countBefore) return undefined;
    delta.push([le, count - countBefore]);
  }
  return delta;
}

export interface SamplerLog {
  warn(fields: object, message: string): void;
  info(fields: object, message: string): void;
}

/**
 * Each instance's /metrics, plus the host. CPU is in cores per instance (1 = one core busy) either
 * way. `cpu: 'workers'` uses each worker's own CPU counter — right when several servers share a
 * machine, or workers are fewer than cores. `'host'` uses the machine's /proc/stat delta: its busy
 * share × its cores is the demand in cores, shared out evenly among the instances — right when the
 * instances are the machine's whole load (one monitor per dedicated server, PM2 only). The share
 * itself would not do: it does not fall when an instance is added at the same demand, so the
 * proportional rule would add (or remove) instances until max (or min).
 */
export function metricsSampler(options: {
  cpu: 'workers' | 'host';
  token?: string;
  fetch?: Fetcher;
  readCpu?: () => CpuTimes;
  /** The cores /proc/stat's aggregate line covers (os.cpus(), which reads the same file). */
  cores?: number;
  readMemoryUsed?: () => number;
  log?: SamplerLog;
}): Sampler {
  const fetch = options.fetch ?? httpFetch;
  const readCpu = options.readCpu ?? (() => readCpuTimes());
  const readMem = options.readMemoryUsed ?? (() => memoryUsed(readMemory()));
  const cores = options.cores ?? Math.max(1, cpus().length);
  const previousCpu = new Map<string, { at: number; seconds: number }>();
  let previousHost: CpuTimes | null = null;
  /** Each instance's event-loop delay buckets at its previous scrape. */
  const previousDelay = new Map<string, [number, number][]>();
  /** Instances whose last scrape failed: logged at the first failure of a streak, not every period. */
  const failing = new Set<string>();

  return {
    async sample(instances, at) {
      let hostCpu: number | null = null;
      if (options.cpu === 'host') {
        const now = readCpu();
        const share = previousHost === null ? null : cpuUtilisation(previousHost, now);
        previousHost = now;
        if (share !== null && instances.length > 0) hostCpu = (share * cores) / instances.length;
      }
      const seen = new Set<string>();
      const samples = await Promise.all(
        (instances as readonly ScrapedInstance[]).map(async (instance): Promise<InstanceSample> => {
          seen.add(instance.id);
          const metrics: Partial<Record<MetricName, number>> = {};
          if (hostCpu !== null) metrics.cpu = hostCpu;
          if (instance.metricsUrl === undefined) return { ...instance, metrics };
          let text: string;
          try {
            text = await fetch(instance.metricsUrl, options.token);
          } catch (err) {
            // Unreachable this time: its values are missing (never a reason to scale down).
            if (!failing.has(instance.id))
              options.log?.warn(
                { instance: instance.id, url: instance.metricsUrl, err: (err as Error).message },
                `autoscale: cannot scrape ${instance.id} (${(err as Error).message}); its values are missing until it answers`,
              );
            failing.add(instance.id);
            return { ...instance, metrics };
          }
          const values = parsePrometheusText(text);
          if (failing.delete(instance.id))
            options.log?.info(
              { instance: instance.id },
              `autoscale: ${instance.id} answers its scrape again`,
            );
          const seconds = values.get(serviceMetricNames.cpuSeconds);
          if (options.cpu === 'workers' && seconds !== undefined) {
            const before = previousCpu.get(instance.id);
            if (before !== undefined && at > before.at)
              metrics.cpu = Math.max(0, (seconds - before.seconds) / ((at - before.at) / 1000));
            previousCpu.set(instance.id, { at, seconds });
          }
          // The p99 of the delays observed since this monitor's previous scrape of the worker (the
          // histogram is cumulative, so Prometheus's scrapes take nothing from it). The first
          // scrape, or one after a restart, has no window of its own yet — its counts cover the
          // boot. No observation in the window is missing too, never an idle loop.
          const delay = parseHistogramBuckets(text, serviceMetricNames.eventLoopDelay);
          const delayBefore = previousDelay.get(instance.id);
          const window = delayBefore === undefined ? undefined : bucketDelta(delayBefore, delay);
          const p99 =
            window === undefined
              ? null
              : quantile(
                  0.99,
                  window.map(([le]) => le),
                  window.map(([, count]) => count),
                );
          if (p99 !== null) metrics.eventLoopP99 = p99;
          if (delay.length > 0) previousDelay.set(instance.id, delay);
          else previousDelay.delete(instance.id);
          const inFlight = values.get(serviceMetricNames.inFlight);
          if (inFlight !== undefined) metrics.inFlight = inFlight;
          const waiting = values.get(serviceMetricNames.poolWaiting);
          if (waiting !== undefined) metrics.poolWaiting = waiting;
          return { ...instance, metrics };
        }),
      );
      for (const id of previousCpu.keys()) if (!seen.has(id)) previousCpu.delete(id);
      for (const id of previousDelay.keys()) if (!seen.has(id)) previousDelay.delete(id);
      for (const id of failing) if (!seen.has(id)) failing.delete(id);
      let memory: number | undefined;
      try {
        memory = readMem();
      } catch {
        memory = undefined;
      }
      return { instances: samples, ...(memory === undefined ? {} : { memoryUsed: memory }) };
    },
  };
}
