import { setTimeout as sleep } from 'node:timers/promises';
import { send } from '../support/load.js';
import { checkData } from './check.js';
import { type Attempt, failureKinds, type Kind, type OrderIntent, startChaosLoad } from './load.js';
import type { FaultSeen, Scenario } from './scenarios.js';
import type { Topology } from './topology.js';

/** One line of the chaos table. */
export interface ChaosRow {
  readonly scenario: string;
  readonly requests: number;
  /** Attempts that failed, by kind (503 = with Retry-After; timeout = no answer within the limit). */
  readonly failed: Partial<Record<Kind, number>>;
  /**
   * p99 latency of the attempts that started while the fault was on, ms: catalog and product reads
   * (cache hits among them), and order attempts (each retry its own attempt). Null: none started.
   */
  readonly p99FaultMs: { readonly reads: number | null; readonly orders: number | null };
  /** The longest attempt of the scenario, answered or not, ms: its margin to the hang limit. */
  readonly slowestMs: number;
  /** From the heal until the last failed attempt ended, ms; null: failures went on to the end. */
  readonly recoverMs: number | null;
  /** The data check's problems (empty: passed). */
  readonly data: readonly string[];
  /** What must not happen whatever the fault: a 5xx other than 503 + Retry-After, a hang, … */
  readonly unexpected: readonly string[];
  readonly orders: { readonly acknowledged: number; readonly open: number };
}

export interface RunOptions {
  readonly long: boolean;
  readonly clients: number;
  /** One attempt without an answer for this long is a hang. */
  readonly attemptTimeoutMs: number;
  readonly log: (line: string) => void;
}

function p99(values: number[]): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil(sorted.length * 0.99) - 1)] ?? 0;
}

const isFailure = (a: Attempt) => failureKinds.includes(a.kind);

/**
 * Polls /ready while the fault is on and keeps every `check: state` pair it reports (a poll that
 * gets no answer within 2 s is skipped: the poller never holds the scenario up).
 */
function watchReady(port: number): { stop(): Promise<ReadonlySet<string>> } {
  const seen = new Set<string>();
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      const answer = send(port, { method: 'GET', path: '/ready' }).catch(() => undefined);
      const res = await Promise.race([answer, sleep(2000).then(() => undefined)]);
      try {
        const checks =
          res === undefined ? {} : (JSON.parse(res.body) as { checks?: Record<string, string> }).checks;
        for (const [check, state] of Object.entries(checks ?? {})) seen.add(`${check}: ${state}`);
      } catch {
        // not JSON: nothing to keep
      }
      await sleep(200);
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      return seen;
    },
  };
}

const cutCounts = (topology: Topology): FaultSeen['cut'] => ({
  postgres: topology.proxies.postgres.stats().cut,
  redis: topology.proxies.redis.stats().cut,
  pgbouncer: topology.proxies.pgbouncer.stats().cut,
});

/** Waits (generously) until the service answers /ready again, between scenarios. */
async function untilReady(topology: Topology): Promise<void> {
  const deadline = Date.now() + 120_000;
  for (;;) {
    try {
      const res = await send(topology.port, { method: 'GET', path: '/ready' });
      if (res.status === 200) return;
    } catch {
      // not answering yet
    }
    if (Date.now() > deadline) throw new Error('the service did not become ready again within 120 s');
    await sleep(250);
  }
}

export async function runScenario(
  topology: Topology,
  scenario: Scenario,
  allIntents: OrderIntent[],
  options: RunOptions,
): Promise<ChaosRow> {
  await scenario.setup?.(topology);
  await untilReady(topology);
  const faultMs = options.long ? scenario.faultMs.long : scenario.faultMs.short;
  const load = startChaosLoad({
    port: topology.port,
    customers: topology.customers,
    products: topology.products,
    clients: options.clients,
    attemptTimeoutMs: options.attemptTimeoutMs,
  });
  const unexpected: string[] = [];
  let healAt = 0;
  let faultAt = 0;
  let ready: ReadonlySet<string> = new Set();
  const cut = { before: cutCounts(topology), after: cutCounts(topology) };
  try {
    await sleep(options.long ? 5000 : 500);
    faultAt = Date.now();
    cut.before = cutCounts(topology);
    const readiness = watchReady(topology.port);
    try {
      await scenario.inject(topology);
      await sleep(faultMs);
    } finally {
      ready = await readiness.stop();
    }
    cut.after = cutCounts(topology);
    await scenario.heal(topology);
    healAt = Date.now();
    // After the heal: at least a few seconds, then until two quiet seconds (or a minute passes).
    const minAfter = options.long ? 15_000 : 2000;
    const until = healAt + 60_000;
    for (;;) {
      await sleep(250);
      const now = Date.now();
      if (now < healAt + minAfter) continue;
      const recent = load.attempts.filter((a) => a.end > now - 2000);
      if (!recent.some(isFailure) && recent.length > 0) break;
      if (now > until) {
        unexpected.push('still failing a minute after the heal');
        break;
      }
    }
  } finally {
    // Open order intents keep retrying (same key) for up to a minute; the ones still open are reported.
    await load.stop(60_000);
  }
  allIntents.push(...load.intents);
  const attempts = load.attempts;
  const failed: Partial<Record<Kind, number>> = {};
  for (const a of attempts) if (isFailure(a)) failed[a.kind] = (failed[a.kind] ?? 0) + 1;
  const lastFailure = attempts.reduce(
    (last, a) => (isFailure(a) && a.end > healAt ? Math.max(last, a.end) : last),
    0,
  );
  const during = attempts.filter((a) => a.start >= faultAt && a.start <= healAt);
  const latencies = (ops: readonly string[]) =>
    during.filter((a) => ops.includes(a.op)).map((a) => a.end - a.start);

  for (const kind of ['500', '502', '504', '503-bare'] as const) {
    const bad = attempts.filter((a) => a.kind === kind);
    if (bad.length > 0)
      unexpected.push(
        `${bad.length} × ${kind === '503-bare' ? '503 without Retry-After' : kind} (${bad[0]?.op}: ${bad[0]?.detail ?? ''})`,
      );
  }
  const hangs = attempts.filter((a) => a.kind === 'timeout');
  if (hangs.length > 0)
    unexpected.push(
      `${hangs.length} requests hung past ${options.attemptTimeoutMs} ms (${[...new Set(hangs.map((h) => h.op))].join(', ')})`,
    );
  const resets = attempts.filter((a) => a.kind === 'conn');
  if (resets.length > 0 && scenario.dropsClientConnections !== true)
    unexpected.push(`${resets.length} connection errors (${resets[0]?.detail})`);
  const inFault = attempts.filter((a) => a.start >= faultAt && a.start <= healAt);
  if (scenario.expect?.readsContinue === true) {
    const reads = inFault.filter((a) => a.op === 'catalog' || a.op === 'product');
    const failedReads = reads.filter(isFailure);
    if (reads.length === 0 || failedReads.length > reads.length * 0.05)
      unexpected.push(
        `reads did not continue: ${failedReads.length} of ${reads.length} failed during the fault (${failedReads[0]?.kind} ${failedReads[0]?.detail ?? ''})`,
      );
  }
  const within = scenario.expect?.writesFailWithinMs;
  if (within !== undefined) {
    const slow = inFault.filter((a) => a.op === 'order' && isFailure(a) && a.end - a.start > within);
    if (slow.length > 0)
      unexpected.push(
        `${slow.length} failed writes took longer than ${within} ms (slowest ${Math.max(...slow.map((a) => a.end - a.start))} ms)`,
      );
  }
  if (scenario.effect !== undefined) {
    const seen: FaultSeen = {
      during: inFault,
      inFlight: attempts.filter((a) => a.start <= healAt && a.end >= faultAt),
      ready,
      cut: {
        postgres: cut.after.postgres - cut.before.postgres,
        redis: cut.after.redis - cut.before.redis,
        pgbouncer: cut.after.pgbouncer - cut.before.pgbouncer,
      },
    };
    const missing = await scenario.effect(seen, topology);
    if (missing !== null) unexpected.push(`the fault had no visible effect: ${missing}`);
  }
  const open = load.intents.filter((i) => !i.done);
  if (open.length > 0)
    unexpected.push(`${open.length} orders without a definitive answer after a minute of retries`);

  const check = await checkData(topology, allIntents);
  const row: ChaosRow = {
    scenario: scenario.name,
    requests: attempts.length,
    failed,
    p99FaultMs: { reads: p99(latencies(['catalog', 'product'])), orders: p99(latencies(['order'])) },
    // A loop, not Math.max(...): a long run has too many attempts to spread into a call.
    slowestMs: attempts.reduce((slowest, a) => Math.max(slowest, a.end - a.start), 0),
    recoverMs: unexpected.includes('still failing a minute after the heal')
      ? null
      : lastFailure === 0
        ? 0
        : lastFailure - healAt,
    data: check.problems,
    unexpected,
    orders: { acknowledged: load.intents.filter((i) => i.acknowledged.length > 0).length, open: open.length },
  };
  options.log(
    `chaos: ${row.scenario}: ${row.requests} requests, failed ${JSON.stringify(row.failed)}, p99 reads ${row.p99FaultMs.reads} ms, orders ${row.p99FaultMs.orders} ms, slowest ${row.slowestMs} ms, recovered ${row.recoverMs} ms, data ${row.data.length === 0 ? 'ok' : row.data.join('; ')}${row.unexpected.length > 0 ? `, UNEXPECTED: ${row.unexpected.join('; ')}` : ''}`,
  );
  return row;
}

export async function runScenarios(
  topology: Topology,
  list: readonly Scenario[],
  options: RunOptions,
): Promise<ChaosRow[]> {
  const intents: OrderIntent[] = [];
  const rows: ChaosRow[] = [];
  for (const scenario of list) rows.push(await runScenario(topology, scenario, intents, options));
  return rows;
}

const ms = (value: number | null) => (value === null ? '–' : `${value} ms`);
const seconds = (ms: number | null) => (ms === null ? 'not recovered' : `${(ms / 1000).toFixed(1)} s`);

/** The one table `npm run chaos` prints (Markdown, so the README can carry it as is). */
export function formatTable(rows: readonly ChaosRow[]): string {
  const header = [
    'scenario',
    'requests',
    'failed by kind',
    'p99 reads (fault)',
    'p99 orders (fault)',
    'slowest attempt',
    'time to recover',
    'data check',
  ];
  const lines = rows.map((r) => {
    const failed = Object.entries(r.failed)
      .map(([kind, n]) => `${kind === '503' ? '503+Retry-After' : kind}: ${n}`)
      .join(', ');
    const data = r.data.length === 0 ? 'ok' : `FAILED: ${r.data.slice(0, 3).join('; ')}`;
    const verdict = r.unexpected.length === 0 ? data : `${data}; unexpected: ${r.unexpected.join('; ')}`;
    return [
      r.scenario,
      String(r.requests),
      failed === '' ? 'none' : failed,
      ms(r.p99FaultMs.reads),
      ms(r.p99FaultMs.orders),
      ms(r.slowestMs),
      seconds(r.recoverMs),
      verdict,
    ];
  });
  const row = (cells: string[]) => `| ${cells.join(' | ')} |`;
  return [row(header), row(header.map(() => '---')), ...lines.map(row)].join('\n');
}
