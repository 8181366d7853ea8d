import { performance } from 'node:perf_hooks';
import { Gauge, type Registry } from 'prom-client';

/**
 * What prom-client's defaults leave out: event-loop utilisation, and which build is running.
 *
 * - `nodejs_eventloop_utilization_ratio`: share of the time since the previous scrape the loop
 *   spent running code rather than waiting (0–1). Like prom-client's event-loop delay percentiles
 *   (`nodejs_eventloop_lag_p50/p90/p99_seconds`, reset at every collect), it covers the interval
 *   between two scrapes, so one Prometheus should be the only scraper.
 * - `shipshape_build_info{version, commit, node_version} 1`: one series per process; join on it to
 *   see which release a change in the graphs belongs to.
 */
export function registerRuntimeMetrics(registry: Registry, build: { version: string; commit: string }): void {
  let previous = performance.eventLoopUtilization();
  new Gauge({
    name: 'nodejs_eventloop_utilization_ratio',
    help: 'Event-loop utilisation since the previous scrape (0-1): time busy running code over time elapsed.',
    registers: [registry],
    collect() {
      const now = performance.eventLoopUtilization();
      this.set(performance.eventLoopUtilization(now, previous).utilization);
      previous = now;
    },
  });
  new Gauge({
    name: 'shipshape_build_info',
    help: 'The running build: package version, commit and Node.js version (always 1).',
    labelNames: ['version', 'commit', 'node_version'],
    registers: [registry],
  }).set({ version: build.version, commit: build.commit, node_version: process.version }, 1);
}
