import { request } from 'node:http';
import type { Instance, Sampler } from './autoscaler.js';
import { type CpuTimes, cpuUtilisation, memoryUsed, readCpuTimes, readMemory } from './host-signals.js';
import type { InstanceSample, MetricName } from './policy.js';

/**
 * Samplers: where the policy's numbers come from. Each instance's own /metrics (the service
 * exports event-loop delay, in-flight requests, pool waiting and its CPU counter), and the host's
 * /proc/stat and memory. Counters (CPU seconds) become rates from the previous scrape of the same
 * instance; an instance seen for the first time has no CPU or event-loop value yet (missing, not
 * zero: the first scrape would cover its boot).
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
  eventLoopP99: 'nodejs_eventloop_lag_p99_seconds',
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
 * Each instance's /metrics, plus the host. `cpu: 'workers'` uses each worker's own CPU (1 = one
 * core) — right when several servers share a machine, or workers are fewer than cores; `'host'`
 * uses the host's /proc/stat delta as every instance's value — right when the instances are the
 * machine's whole load (one monitor per dedicated server).
 */
export function metricsSampler(options: {
  cpu: 'workers' | 'host';
  token?: string;
  fetch?: Fetcher;
  readCpu?: () => CpuTimes;
  readMemoryUsed?: () => number;
}): Sampler {
  const fetch = options.fetch ?? httpFetch;
  const readCpu = options.readCpu ?? (() => readCpuTimes());
  const readMem = options.readMemoryUsed ?? (() => memoryUsed(readMemory()));
  const previousCpu = new Map<string, { at: number; seconds: number }>();
  let previousHost: CpuTimes | null = null;
  const scrapedBefore = new Set<string>();

  return {
    async sample(instances, at) {
      let hostCpu: number | null = null;
      if (options.cpu === 'host') {
        const now = readCpu();
        hostCpu = previousHost === null ? null : cpuUtilisation(previousHost, now);
        previousHost = now;
      }
      const seen = new Set<string>();
      const samples = await Promise.all(
        (instances as readonly ScrapedInstance[]).map(async (instance): Promise<InstanceSample> => {
          seen.add(instance.id);
          const metrics: Partial<Record<MetricName, number>> = {};
          if (hostCpu !== null) metrics.cpu = hostCpu;
          if (instance.metricsUrl === undefined) return { ...instance, metrics };
          let values: Map<string, number>;
          try {
            values = parsePrometheusText(await fetch(instance.metricsUrl, options.token));
          } catch {
            // Unreachable this time: its values are missing (never a reason to scale down).
            return { ...instance, metrics };
          }
          const seconds = values.get(serviceMetricNames.cpuSeconds);
          if (options.cpu === 'workers' && seconds !== undefined) {
            const before = previousCpu.get(instance.id);
            if (before !== undefined && at > before.at)
              metrics.cpu = Math.max(0, (seconds - before.seconds) / ((at - before.at) / 1000));
            previousCpu.set(instance.id, { at, seconds });
          }
          // prom-client resets the event-loop histogram at every collect: the first scrape of a
          // worker covers its whole boot (module loading, migrations), not its serving. Skipped.
          const p99 = values.get(serviceMetricNames.eventLoopP99);
          if (p99 !== undefined && scrapedBefore.has(instance.id)) metrics.eventLoopP99 = p99;
          scrapedBefore.add(instance.id);
          const inFlight = values.get(serviceMetricNames.inFlight);
          if (inFlight !== undefined) metrics.inFlight = inFlight;
          const waiting = values.get(serviceMetricNames.poolWaiting);
          if (waiting !== undefined) metrics.poolWaiting = waiting;
          return { ...instance, metrics };
        }),
      );
      for (const id of previousCpu.keys()) if (!seen.has(id)) previousCpu.delete(id);
      for (const id of scrapedBefore) if (!seen.has(id)) scrapedBefore.delete(id);
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
