import { performance } from 'node:perf_hooks';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

/** Event-loop delay buckets (seconds): fine around 0.1 s, the alert's threshold and the autoscaler's default target. */
export const eventLoopDelayBuckets = [
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10,
];
/** How often the delay is sampled: 50 samples a second, each one histogram observation. */
const delayResolutionMs = 20;

/**
 * What prom-client's defaults leave out, as cumulative series that any number of readers can
 * scrape without disturbing each other. prom-client's own event-loop gauges
 * (`nodejs_eventloop_lag_p50/p90/p99_seconds`, still exported) restart their interval at every
 * collect, so with Prometheus and the autoscaler both scraping, each saw only the time since the
 * other's last scrape: a stall just before one scrape was invisible to the other (decision 0125).
 *
 * - `shipshape_eventloop_delay_seconds` (histogram): how late a 20 ms timer fired, one observation
 *   per firing. `histogram_quantile(0.99, rate(…_bucket[1m]))` is the p99 over the last minute (any window); the
 *   autoscaler takes the same quantile from the difference of its own two scrapes.
 * - `shipshape_eventloop_busy_seconds_total` (counter): time the loop spent running code;
 *   `rate()` of it is the event-loop utilisation (0–1) over any window.
 * - `shipshape_build_info{version, commit, node_version} 1`: one series per process; join on it to
 *   see which release a change in the graphs belongs to.
 *
 * Returns `stop`, which ends the delay sampling (the app's close calls it).
 */
export function registerRuntimeMetrics(
  registry: Registry,
  build: { version: string; commit: string },
): { stop(): void } {
  const delay = new Histogram({
    name: 'shipshape_eventloop_delay_seconds',
    help: `How late a ${delayResolutionMs} ms timer fired (seconds), one observation per firing: the event loop's delay.`,
    buckets: eventLoopDelayBuckets,
    registers: [registry],
  });
  // A timer's lateness is the loop's delay: whatever ran (or blocked) in between held it up.
  let due = performance.now() + delayResolutionMs;
  const sampler = setInterval(() => {
    const now = performance.now();
    delay.observe(Math.max(0, now - due) / 1000);
    due = now + delayResolutionMs;
  }, delayResolutionMs);
  sampler.unref();

  let busySeconds = performance.eventLoopUtilization().active / 1000;
  new Counter({
    name: 'shipshape_eventloop_busy_seconds_total',
    help: 'Time the event loop spent running code rather than waiting (seconds); its rate is the utilisation, 0-1.',
    registers: [registry],
    collect() {
      const now = performance.eventLoopUtilization().active / 1000;
      this.inc(Math.max(0, now - busySeconds));
      busySeconds = now;
    },
  });
  new Gauge({
    name: 'shipshape_build_info',
    help: 'The running build: package version, commit and Node.js version (always 1).',
    labelNames: ['version', 'commit', 'node_version'],
    registers: [registry],
  }).set({ version: build.version, commit: build.commit, node_version: process.version }, 1);
  return { stop: () => clearInterval(sampler) };
}
