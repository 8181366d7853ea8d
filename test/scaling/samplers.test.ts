import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { quantile } from '../../src/lib/histogram.js';
import type { Instance } from '../../src/scaling/autoscaler.js';
import type { CpuTimes } from '../../src/scaling/host-signals.js';
import {
  afterChange,
  type Decision,
  decide,
  defaultPolicy,
  initialState,
  type PolicyConfig,
} from '../../src/scaling/policy.js';
import { bucketDelta, metricsSampler, parseHistogramBuckets } from '../../src/scaling/samplers.js';

/**
 * A machine with `cores` cores whose /proc/stat advances by a fixed demand (in busy cores) per
 * period, whatever the number of workers: the load comes from the clients, not from the workers.
 * USER_HZ 100: one core for one second is 100 ticks.
 */
function machine(cores: number) {
  let times: CpuTimes = {
    user: 1e6,
    nice: 0,
    system: 1e5,
    idle: 5e6,
    iowait: 0,
    irq: 0,
    softirq: 0,
    steal: 0,
  };
  return {
    read: () => times,
    run(demandCores: number, ms: number) {
      const busy = Math.min(cores, demandCores) * (ms / 10);
      const idle = cores * (ms / 10) - busy;
      times = { ...times, user: times.user + busy, idle: times.idle + idle };
    },
  };
}

/**
 * The sampler with `--cpu host` and the policy, in a loop at a constant demand: each period the
 * machine runs, the sampler reads /proc/stat, the policy decides, and the change is made at once.
 */
async function hostTrace(options: { cores: number; demand: number; start: number; periods: number }) {
  const config: PolicyConfig = { ...defaultPolicy, min: 1, max: 16, targets: { cpu: 0.8 } };
  const host = machine(options.cores);
  const sampler = metricsSampler({
    cpu: 'host',
    cores: options.cores,
    readCpu: host.read,
    readMemoryUsed: () => 0.3,
  });
  let instances: Instance[] = Array.from({ length: options.start }, (_, i) => ({
    id: `w${i}`,
    startedAt: -1e9,
  }));
  let next = options.start;
  let state = initialState(0);
  await sampler.sample(instances, 0);
  const counts: number[] = [];
  const decisions: Decision[] = [];
  for (let k = 1; k <= options.periods; k++) {
    const at = k * config.periodMs;
    host.run(options.demand, config.periodMs);
    const observed = await sampler.sample(instances, at);
    const result = decide(config, state, { at, ...observed });
    state = result.state;
    decisions.push(result.decision);
    const { desired, action } = result.decision;
    if (action !== 'hold') {
      state = afterChange(state, result.decision, at);
      instances =
        desired > instances.length
          ? [
              ...instances,
              ...Array.from({ length: desired - instances.length }, () => ({
                id: `w${next++}`,
                startedAt: at,
              })),
            ]
          : instances.slice(instances.length - desired);
    }
    counts.push(instances.length);
  }
  return { counts, decisions };
}

describe('metrics sampler', () => {
  it('--cpu host at a constant demand settles at demand / target (the machine share alone ratchets)', async () => {
    // 8 cores at 95 %: 7.6 busy cores. Read as every worker's own 0.95 against 0.8, each period
    // wants 19 % more and the count runs to max; shared out, 7.6 / 0.8 → 10 workers, and it stays.
    const high = await hostTrace({ cores: 8, demand: 7.6, start: 2, periods: 40 });
    assert.equal(high.counts.at(-1), 10, high.counts.join(' '));
    assert.ok(
      high.counts.slice(-20).every((c) => c === 10),
      `settled for the last ten minutes: ${high.counts.join(' ')}`,
    );
    assert.ok(
      high.decisions.every((d) => d.action !== 'scale-down'),
      'never overshoots',
    );
    // 8 cores at 30 %: 2.4 busy cores. Read as every worker's 0.3, it shrinks to min; shared out,
    // 2.4 / 0.8 → 3.
    const low = await hostTrace({ cores: 8, demand: 2.4, start: 8, periods: 40 });
    assert.equal(low.counts.at(-1), 3, low.counts.join(' '));
    assert.ok(
      low.counts.slice(-10).every((c) => c === 3),
      low.counts.join(' '),
    );
    assert.ok(
      low.decisions.every((d) => d.action !== 'scale-up'),
      'never undershoots',
    );
  });

  it('--cpu host: the same demand over more instances reads lower per instance', async () => {
    const host = machine(4);
    const sampler = metricsSampler({ cpu: 'host', cores: 4, readCpu: host.read, readMemoryUsed: () => 0.3 });
    const two = [
      { id: 'a', startedAt: 0 },
      { id: 'b', startedAt: 0 },
    ];
    const first = await sampler.sample(two, 0);
    assert.equal(first.instances[0]?.metrics.cpu, undefined, 'one /proc/stat sample is no rate');
    host.run(2, 30_000); // half the machine: 2 busy cores
    const before = await sampler.sample(two, 30_000);
    assert.deepEqual(
      before.instances.map((i) => i.metrics.cpu),
      [1, 1],
    );
    host.run(2, 30_000);
    const four = [...two, { id: 'c', startedAt: 0 }, { id: 'd', startedAt: 0 }];
    const after = await sampler.sample(four, 60_000);
    assert.deepEqual(
      after.instances.map((i) => i.metrics.cpu),
      [0.5, 0.5, 0.5, 0.5],
    );
  });

  // The service's event-loop delay histogram (src/infra/runtime-metrics.ts) as /metrics shows it:
  // cumulative counts by upper bound.
  const bounds = ['0.01', '0.05', '0.1', '0.25', '0.5', '+Inf'];
  const page = (counts: readonly number[]) =>
    [
      '# TYPE shipshape_eventloop_delay_seconds histogram',
      ...bounds.map((le, i) => `shipshape_eventloop_delay_seconds_bucket{le="${le}"} ${counts[i]}`),
      `shipshape_eventloop_delay_seconds_count ${counts.at(-1)}`,
      'http_requests_in_flight 3',
      '',
    ].join('\n');
  const sampled = page([900, 980, 990, 1000, 1000, 1000]);

  /** The shared quantile over [bound, cumulative count] pairs, as the sampler calls it. */
  const histogramQuantile = (q: number, buckets: readonly (readonly [number, number])[]) =>
    quantile(
      q,
      buckets.map(([le]) => le),
      buckets.map(([, count]) => count),
    ) ?? undefined;

  it('bucket counts, their difference and the quantile as histogram_quantile computes it', () => {
    const buckets = parseHistogramBuckets(
      [
        'x_bucket{route="/a",le="0.1"} 1',
        'x_bucket{route="/b",le="0.1"} 2',
        'x_bucket{route="/a",le="+Inf"} 4',
        'x_bucket{route="/b",le="+Inf"} 6',
        'x_count 10',
        'xy_bucket{le="0.1"} 99',
      ].join('\n'),
      'x',
    );
    assert.deepEqual(buckets, [
      [0.1, 3],
      [Number.POSITIVE_INFINITY, 10],
    ]);
    // 100 observations: 90 under 10 ms, 8 between 10 and 50 ms, 2 between 50 and 100 ms.
    const window = [
      [0.01, 90],
      [0.05, 98],
      [0.1, 100],
      [Number.POSITIVE_INFINITY, 100],
    ] as const;
    assert.equal(histogramQuantile(0.5, window), (0.01 * 50) / 90);
    assert.ok(Math.abs((histogramQuantile(0.99, window) ?? 0) - 0.075) < 1e-12);
    assert.equal(
      histogramQuantile(0.99, [
        [0.1, 0],
        [Number.POSITIVE_INFINITY, 5],
      ]),
      0.1,
      'beyond the last bound',
    );
    assert.equal(
      histogramQuantile(0.99, [
        [0.1, 0],
        [Number.POSITIVE_INFINITY, 0],
      ]),
      undefined,
      'no observation',
    );
    assert.deepEqual(
      bucketDelta(
        [
          [0.1, 5],
          [Number.POSITIVE_INFINITY, 6],
        ],
        [
          [0.1, 7],
          [Number.POSITIVE_INFINITY, 10],
        ],
      ),
      [
        [0.1, 2],
        [Number.POSITIVE_INFINITY, 4],
      ],
    );
    assert.equal(bucketDelta([[0.1, 5]], [[0.1, 1]]), undefined, 'counts fell: the process restarted');
    assert.equal(bucketDelta([[0.1, 5]], [[0.2, 9]]), undefined, 'other bounds');
  });

  it("the event-loop p99 covers the window since this monitor's own previous scrape, whoever else scrapes", async () => {
    // Scrapes 1-2: 1,000 quick firings, then 100 more of which 10 were 200 ms late (p99 in the
    // 0.1-0.25 s bucket). Another scraper in between takes nothing away: the counts only grow.
    // Scrape 3: nothing new (missing, not an idle loop). Scrape 4: counts fell — the worker
    // restarted and its counts cover the boot (missing); scrape 5 measures from there.
    const pages = [
      sampled,
      page([990, 1070, 1080, 1100, 1100, 1100]),
      page([990, 1070, 1080, 1100, 1100, 1100]),
      page([50, 60, 60, 60, 60, 60]),
      page([250, 260, 260, 260, 260, 260]),
    ];
    const sampler = metricsSampler({
      cpu: 'workers',
      fetch: async () => pages.shift() ?? sampled,
      readMemoryUsed: () => 0.3,
    });
    const worker = [{ id: 'a', startedAt: -1e9, metricsUrl: 'http://worker/metrics' }];
    const p99s: (number | undefined)[] = [];
    for (let at = 1000; at <= 5000; at += 1000) {
      const { instances } = await sampler.sample(worker, at);
      p99s.push(instances[0]?.metrics.eventLoopP99);
      assert.equal(instances[0]?.metrics.inFlight, 3, 'the rest of the page counts every time');
    }
    assert.equal(p99s[0], undefined, 'the first scrape covers the boot');
    assert.ok(Math.abs((p99s[1] ?? 0) - (0.1 + (0.15 * 9) / 10)) < 1e-9, `${p99s[1]}`);
    assert.equal(p99s[2], undefined, 'no firing in the window');
    assert.equal(p99s[3], undefined, 'restarted: the counts began again');
    assert.ok((p99s[4] ?? 1) <= 0.01, `${p99s[4]}`);
    // So the policy does not read an idle loop into a missing value.
    const config: PolicyConfig = {
      ...defaultPolicy,
      targets: { eventLoopP99: 0.1 },
      scaleDown: { ...defaultPolicy.scaleDown, stabilisationMs: 0, cooldownMs: 0 },
    };
    const unsampled = { id: 'a', startedAt: -1e9, metrics: { inFlight: 3 } };
    const decision = decide(config, initialState(0), {
      at: 1,
      instances: [unsampled, { ...unsampled, id: 'b' }],
    }).decision;
    assert.equal(decision.reason, 'no-metrics');
  });

  it('a failing scrape is logged once per instance and failure streak', async () => {
    const lines: { level: string; fields: object; message: string }[] = [];
    const log = {
      warn: (fields: object, message: string) => lines.push({ level: 'warn', fields, message }),
      info: (fields: object, message: string) => lines.push({ level: 'info', fields, message }),
    };
    // a: fails, fails, fails, answers, fails; b: always answers.
    const script = [false, false, false, true, false];
    let round = -1;
    const sampler = metricsSampler({
      cpu: 'workers',
      log,
      readMemoryUsed: () => 0.3,
      fetch: async (url) => {
        if (url.includes('//a/') && script[round] === false) throw new Error(`${url}: connect ECONNREFUSED`);
        return sampled;
      },
    });
    const workers = [
      { id: 'a', startedAt: 0, metricsUrl: 'http://a/metrics' },
      { id: 'b', startedAt: 0, metricsUrl: 'http://b/metrics' },
    ];
    for (round = 0; round < script.length; round++) await sampler.sample(workers, round * 1000);
    assert.deepEqual(
      lines.map((l) => [l.level, (l.fields as { instance: string }).instance]),
      [
        ['warn', 'a'],
        ['info', 'a'],
        ['warn', 'a'],
      ],
    );
    assert.match(lines[0]?.message ?? '', /cannot scrape a \(http:\/\/a\/metrics: connect ECONNREFUSED\)/);
  });
});
