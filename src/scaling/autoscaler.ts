import { setTimeout as sleep } from 'node:timers/promises';
import { Counter, Gauge, type Registry } from 'prom-client';
import {
  afterChange,
  type Decision,
  decide,
  type InstanceSample,
  initialState,
  metricNames,
  type PolicyConfig,
  type PolicyState,
} from './policy.js';

/** One running instance (a PM2 worker, a droplet) as the actuator sees it. */
export interface Instance {
  readonly id: string;
  /** ms since the epoch; the warm-up is measured from it. */
  readonly startedAt: number;
}

/** What changes the instance count. Absolute counts only: a relative change repeated is a different change. */
export interface Actuator {
  readonly name: string;
  instances(): Promise<Instance[]>;
  /**
   * Makes the count `desired`; resolves once the new instances serve and the removed ones have
   * drained (so the next decision sees the result), rejects when it could not.
   */
  scaleTo(desired: number, current: readonly Instance[]): Promise<void>;
  close?(): Promise<void>;
}

/** Reads the signals of the instances (their /metrics, the host). */
export interface Sampler {
  sample(
    instances: readonly Instance[],
    at: number,
  ): Promise<{ instances: InstanceSample[]; memoryUsed?: number }>;
}

export interface DecisionRecord extends Decision {
  readonly target: string;
  /** Whether the change was made in full (false on hold, dry run, or a failed actuator). */
  readonly applied: boolean;
  readonly error?: string;
  /**
   * When the actuator was called: the count read back after it returned or failed (null when it
   * could not be read), and when it returned (what cooldowns and warm-up count from).
   */
  readonly reached?: number | null;
  readonly completedAt?: number;
  readonly durationMs: number;
}

export interface AutoscalerLog {
  info(fields: object, message: string): void;
  error(fields: object, message: string): void;
}

export interface Autoscaler {
  /** One decision now; a call while one runs gets that one's result (never two at once). */
  tick(): Promise<DecisionRecord>;
  /** Decides every period until the signal aborts (a slow decision delays the next, never overlaps it). */
  run(signal: AbortSignal): Promise<void>;
  readonly last: DecisionRecord | null;
}

function autoscalerMetrics(registry: Registry) {
  const existing = registry.getSingleMetric('autoscaler_decisions_total');
  if (existing !== undefined)
    return {
      current: registry.getSingleMetric('autoscaler_instances_current') as Gauge<'target'>,
      desired: registry.getSingleMetric('autoscaler_instances_desired') as Gauge<'target'>,
      decisions: existing as Counter<'target' | 'action' | 'reason'>,
      last: registry.getSingleMetric('autoscaler_last_decision_timestamp_seconds') as Gauge<'target'>,
      ratio: registry.getSingleMetric('autoscaler_metric_ratio') as Gauge<'target' | 'metric'>,
      failures: registry.getSingleMetric('autoscaler_actuation_failures_total') as Counter<'target'>,
      dryRun: registry.getSingleMetric('autoscaler_dry_run') as Gauge<'target'>,
    };
  return {
    current: new Gauge({
      name: 'autoscaler_instances_current',
      help: 'Instances (PM2 workers, droplets) counted at the last decision.',
      labelNames: ['target'],
      registers: [registry],
    }),
    desired: new Gauge({
      name: 'autoscaler_instances_desired',
      help: 'Instance count the last decision asked for (the current count when it held).',
      labelNames: ['target'],
      registers: [registry],
    }),
    decisions: new Counter({
      name: 'autoscaler_decisions_total',
      help: 'Decisions by action (scale-up, scale-down, hold) and reason (the deciding metric or why it held).',
      labelNames: ['target', 'action', 'reason'],
      registers: [registry],
    }),
    last: new Gauge({
      name: 'autoscaler_last_decision_timestamp_seconds',
      help: 'When the last decision was made (a stale value means the monitor is stuck).',
      labelNames: ['target'],
      registers: [registry],
    }),
    ratio: new Gauge({
      name: 'autoscaler_metric_ratio',
      help: 'Each metric over its target at the last decision (1 = on target).',
      labelNames: ['target', 'metric'],
      registers: [registry],
    }),
    failures: new Counter({
      name: 'autoscaler_actuation_failures_total',
      help: 'Changes the actuator could not make.',
      labelNames: ['target'],
      registers: [registry],
    }),
    dryRun: new Gauge({
      name: 'autoscaler_dry_run',
      help: '1 when the monitor only reports what it would do.',
      labelNames: ['target'],
      registers: [registry],
    }),
  };
}

export function createAutoscaler(options: {
  target: string;
  policy: PolicyConfig;
  actuator: Actuator;
  sampler: Sampler;
  log: AutoscalerLog;
  registry?: Registry;
  now?: () => number;
  onDecision?: (record: DecisionRecord) => void;
}): Autoscaler {
  const { target, policy, actuator, sampler, log } = options;
  const now = options.now ?? Date.now;
  const metrics = options.registry === undefined ? null : autoscalerMetrics(options.registry);
  metrics?.dryRun.set({ target }, policy.dryRun ? 1 : 0);
  let state: PolicyState = initialState(now());
  let running: Promise<DecisionRecord> | null = null;
  let last: DecisionRecord | null = null;

  /**
   * When each instance a change brought in became part of the count (the change's completion).
   * Its warm-up runs from then, not from its own start time: a droplet's created_at is minutes
   * before it serves, a PM2 worker starts well before it answers /ready.
   */
  const joinedAt = new Map<string, number>();

  async function once(): Promise<DecisionRecord> {
    const started = now();
    const listed = await actuator.instances();
    for (const id of joinedAt.keys()) if (!listed.some((i) => i.id === id)) joinedAt.delete(id);
    const instances = listed.map((i) => {
      const joined = joinedAt.get(i.id);
      return joined !== undefined && joined > i.startedAt ? { ...i, startedAt: joined } : i;
    });
    const observed = await sampler.sample(instances, started);
    const result = decide(policy, state, { at: started, ...observed });
    state = result.state;
    const { decision } = result;
    let applied = false;
    let error: string | undefined;
    let outcome: { reached: number | null; completedAt: number } | undefined;
    if (decision.action !== 'hold' && !policy.dryRun) {
      try {
        await actuator.scaleTo(decision.desired, listed);
        applied = true;
      } catch (err) {
        error = err instanceof Error ? err.message : String(err);
      }
      // Cooldowns and warm-up start when the change is complete, not when it was decided (a
      // change can take minutes). And a failed call may still have moved the count (PM2 scaled
      // but a worker missed /ready in time; the second of three droplets failed): the count is
      // read again, and whatever moved is recorded as a change, so the next period does not
      // change it once more.
      const completedAt = now();
      const after = await actuator.instances().catch(() => null);
      const reached = after?.length ?? (applied ? decision.desired : null);
      outcome = { reached, completedAt };
      if (after !== null) {
        const before = new Set(listed.map((i) => i.id));
        for (const i of after) if (!before.has(i.id)) joinedAt.set(i.id, completedAt);
      }
      // A change the actuator made counts as decided (whatever a lagging list says). After a
      // failure, what moved counts; unreadable, the count may have moved, so the cooldown starts
      // as if it had (a held retry costs one period; a repeated change costs instances).
      state = afterChange(
        state,
        applied || reached === null ? decision : { current: decision.current, desired: reached },
        completedAt,
      );
    }
    const record: DecisionRecord = {
      target,
      ...decision,
      applied,
      ...(error === undefined ? {} : { error }),
      ...(outcome ?? {}),
      durationMs: now() - started,
    };
    if (metrics !== null) {
      metrics.current.set({ target }, decision.current);
      metrics.desired.set({ target }, decision.desired);
      metrics.decisions.inc({ target, action: decision.action, reason: decision.reason });
      metrics.last.set({ target }, decision.at / 1000);
      for (const name of metricNames) {
        const reading = decision.metrics[name];
        if (reading !== undefined) metrics.ratio.set({ target, metric: name }, reading.ratio);
      }
      if (error !== undefined) metrics.failures.inc({ target });
    }
    // Every decision, holds included, with its inputs: the log answers "why did it (not) scale?".
    if (error !== undefined)
      log.error(
        { autoscale: record },
        `autoscale ${target}: ${decision.action} failed${
          outcome?.reached === null
            ? ' (count unreadable afterwards: cooldown started)'
            : outcome !== undefined && outcome.reached !== decision.current
              ? ` after reaching ${outcome.reached} (cooldown started)`
              : ''
        }`,
      );
    else
      log.info(
        { autoscale: record },
        `autoscale ${target}: ${decision.action} ${decision.current} → ${decision.desired} (${decision.reason})${policy.dryRun && decision.action !== 'hold' ? ' [dry run]' : ''}`,
      );
    last = record;
    options.onDecision?.(record);
    return record;
  }

  const tick = () => {
    running ??= once().finally(() => {
      running = null;
    });
    return running;
  };

  return {
    tick,
    get last() {
      return last;
    },
    async run(signal) {
      const origin = now();
      let k = 0;
      while (!signal.aborted) {
        try {
          await tick();
        } catch (err) {
          // Reading the instances or their metrics failed: no decision this period.
          log.error({ err, target }, `autoscale ${target}: no decision (${(err as Error).message})`);
        }
        // Next period boundary; boundaries a slow decision overran are skipped, not queued.
        k = Math.max(k + 1, Math.ceil((now() - origin) / policy.periodMs));
        const wait = origin + k * policy.periodMs - now();
        await sleep(Math.max(0, wait), undefined, { signal }).catch(() => {});
      }
    },
  };
}
