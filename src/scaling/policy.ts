/**
 * The autoscaling policy as pure functions (docs/decisions/0080-autoscaling-policy.md): an
 * observation of the instances goes in, a decision comes out, nothing is read from the clock or
 * the machine. The shape is Kubernetes' HPA: desired = ceil(current × metric / target) per metric,
 * the highest wins, nothing within a tolerance; scale-up at once within a step limit; scale-down
 * only to the highest recommendation of a stabilisation window, one step at a time; cooldowns,
 * min/max, and a warm-up during which new instances' samples are ignored and nothing is removed.
 */

export const metricNames = ['cpu', 'eventLoopP99', 'inFlight', 'poolWaiting'] as const;
export type MetricName = (typeof metricNames)[number];

export interface PolicyConfig {
  readonly min: number;
  readonly max: number;
  /** Time between decisions (the loop's, recorded here so the defaults live in one place). */
  readonly periodMs: number;
  /** |metric/target − 1| at or below this: no change (HPA: 0.1). */
  readonly tolerance: number;
  /** Per-instance targets. A metric without a target is not used. */
  readonly targets: Readonly<Partial<Record<MetricName, number>>>;
  /** Share of memory in use (0–1) at or above which nothing is added: a guard, never a reason to scale. */
  readonly memoryGuard: number;
  readonly scaleUp: {
    /** At most max(pods, current × percent / 100) added per decision. */
    readonly maxPods: number;
    readonly maxPercent: number;
    /** After a scale-up, no other scale-up for this long. */
    readonly cooldownMs: number;
  };
  readonly scaleDown: {
    /** At most this many removed per decision. */
    readonly maxPods: number;
    /** Scale down only to the highest recommendation made in this window. */
    readonly stabilisationMs: number;
    /** After any change, no scale-down for this long. */
    readonly cooldownMs: number;
  };
  /** An instance younger than this is warming up: its samples are ignored, and nothing is removed. */
  readonly warmupMs: number;
  /** Decide and report, never act. */
  readonly dryRun: boolean;
}

/**
 * The defaults: the guide's thresholds where it has one (CPU 80 %, memory 85 %, a 30 s check),
 * Kubernetes' HPA defaults for the rest (tolerance 0.1, scale-up 100 % or 4 per period, a 5-minute
 * scale-down stabilisation), the project's HPA manifest for scale-down (one per minute).
 */
export const defaultPolicy: PolicyConfig = {
  min: 1,
  max: 4,
  periodMs: 30_000,
  tolerance: 0.1,
  targets: { cpu: 0.8, eventLoopP99: 0.1, inFlight: 32, poolWaiting: 2 },
  memoryGuard: 0.85,
  scaleUp: { maxPods: 4, maxPercent: 100, cooldownMs: 30_000 },
  scaleDown: { maxPods: 1, stabilisationMs: 300_000, cooldownMs: 60_000 },
  warmupMs: 60_000,
  dryRun: false,
};

export interface InstanceSample {
  readonly id: string;
  /** When the instance started (ms since the epoch): what the warm-up is measured from. */
  readonly startedAt: number;
  /** Its values; a missing one was not measured (a failed scrape, a counter without a previous sample). */
  readonly metrics: Readonly<Partial<Record<MetricName, number>>>;
}

export interface Observation {
  readonly at: number;
  readonly instances: readonly InstanceSample[];
  /** Share of memory in use (0–1) where the instances run, when known. */
  readonly memoryUsed?: number;
}

export interface PolicyState {
  /** When the policy began observing (no scale-down before one full stabilisation window). */
  readonly since: number;
  readonly recommendations: readonly { readonly at: number; readonly desired: number }[];
  readonly lastScaleUpAt: number | null;
  readonly lastChangeAt: number | null;
}

export type Action = 'scale-up' | 'scale-down' | 'hold';

export interface MetricReading {
  /** Average per instance, missing values and warming instances counted as HPA does (see ratioFor). */
  readonly value: number;
  readonly target: number;
  readonly ratio: number;
  /** This metric's own proposal: ceil(current × ratio), or current within the tolerance. */
  readonly desired: number;
}

export interface Decision {
  readonly at: number;
  readonly current: number;
  /** What the instance count should become (current when holding). */
  readonly desired: number;
  /** The proportional rule's answer, clamped to min/max, before cooldowns, steps and stabilisation. */
  readonly recommended: number;
  readonly action: Action;
  /** Why, in one machine-readable word (a metric label) … */
  readonly reason: string;
  /** … and in a sentence for the log. */
  readonly detail: string;
  readonly metrics: Readonly<Partial<Record<MetricName, MetricReading>>>;
  readonly warming: number;
  readonly memoryUsed: number | null;
  readonly dryRun: boolean;
}

export function initialState(at: number): PolicyState {
  return { since: at, recommendations: [], lastScaleUpAt: null, lastChangeAt: null };
}

/** ceil that ignores floating-point dust (2 × 1.5 must be 3, not 4). */
const ceil = (x: number) => Math.ceil(x - 1e-9);

/**
 * One metric's ratio to target, HPA-style: the average over the ready instances that reported it;
 * then, if that points up, recomputed with warming and missing instances as 0 (capacity that is
 * coming), and if it points down, with them at the target (no scale-down on missing data). If the
 * recomputation flips the direction or lands within the tolerance, the metric proposes no change.
 */
function ratioFor(
  values: readonly number[],
  current: number,
  target: number,
  tolerance: number,
): { value: number; ratio: number } | null {
  if (values.length === 0) return null;
  const sum = values.reduce((a, b) => a + b, 0);
  const missing = current - values.length;
  const raw = sum / values.length / target;
  if (raw > 1 + tolerance) {
    const value = sum / current;
    const ratio = value / target;
    return ratio > 1 + tolerance ? { value, ratio } : { value, ratio: 1 };
  }
  if (raw < 1 - tolerance) {
    const value = (sum + missing * target) / current;
    const ratio = value / target;
    return ratio < 1 - tolerance ? { value, ratio } : { value, ratio: 1 };
  }
  return { value: sum / values.length, ratio: 1 };
}

function round(x: number): number {
  return Math.round(x * 1000) / 1000;
}

/**
 * The decision for one observation. The returned state holds the new recommendation; the loop
 * records a change with `afterChange` only once the actuator has made it, at the time it finished.
 */
export function decide(
  config: PolicyConfig,
  state: PolicyState,
  observation: Observation,
): { decision: Decision; state: PolicyState } {
  const { at, instances } = observation;
  const current = instances.length;
  const clamp = (n: number) => Math.min(config.max, Math.max(config.min, n));
  const warming = instances.filter((i) => at - i.startedAt < config.warmupMs).length;
  const ready = instances.filter((i) => at - i.startedAt >= config.warmupMs);
  const memoryUsed = observation.memoryUsed ?? null;

  const metrics: Partial<Record<MetricName, MetricReading>> = {};
  let proposal: { desired: number; metric: MetricName } | null = null;
  for (const name of metricNames) {
    const target = config.targets[name];
    if (target === undefined || target <= 0 || current === 0) continue;
    const values = ready.map((i) => i.metrics[name]).filter((v): v is number => Number.isFinite(v));
    const reading = ratioFor(values, current, target, config.tolerance);
    if (reading === null) continue;
    const desired = reading.ratio === 1 ? current : Math.max(1, ceil(current * reading.ratio));
    metrics[name] = { value: round(reading.value), target, ratio: round(reading.ratio), desired };
    // Ties go to the metric furthest above (or least below) its target: the reason names what decided.
    if (
      proposal === null ||
      desired > proposal.desired ||
      (desired === proposal.desired && reading.ratio > (metrics[proposal.metric]?.ratio ?? 0))
    )
      proposal = { desired, metric: name };
  }

  const recommended = clamp(proposal?.desired ?? current);
  const windowStart = at - config.scaleDown.stabilisationMs;
  const recommendations = [
    ...state.recommendations.filter((r) => r.at > windowStart),
    { at, desired: recommended },
  ];
  const next: PolicyState = { ...state, recommendations };
  const base = { at, current, recommended, metrics, warming, memoryUsed, dryRun: config.dryRun };
  const hold = (reason: string, detail: string) => ({
    decision: { ...base, desired: current, action: 'hold' as const, reason, detail },
    state: next,
  });
  const change = (desired: number, reason: string, detail: string) => ({
    decision: {
      ...base,
      desired,
      action: desired > current ? ('scale-up' as const) : ('scale-down' as const),
      reason,
      detail,
    },
    state: next,
  });
  const because =
    proposal === null
      ? 'no metric'
      : `${proposal.metric} ${metrics[proposal.metric]?.value} against target ${config.targets[proposal.metric]} (ratio ${metrics[proposal.metric]?.ratio})`;

  if (current < config.min) return change(config.min, 'below-min', `${current} < min ${config.min}`);
  if (current > config.max) return change(config.max, 'above-max', `${current} > max ${config.max}`);
  if (proposal === null) return hold('no-metrics', 'no ready instance reported a metric with a target');

  if (recommended > current) {
    if (memoryUsed !== null && memoryUsed >= config.memoryGuard)
      return hold(
        'memory-guard',
        `${because}, but memory is ${Math.round(memoryUsed * 100)} % used (guard ${Math.round(config.memoryGuard * 100)} %): adding instances here could exhaust it`,
      );
    if (state.lastScaleUpAt !== null && at - state.lastScaleUpAt < config.scaleUp.cooldownMs)
      return hold('scale-up-cooldown', `${because}; last scale-up ${at - state.lastScaleUpAt} ms ago`);
    const step = Math.max(config.scaleUp.maxPods, ceil((current * config.scaleUp.maxPercent) / 100));
    const desired = Math.min(recommended, current + step);
    return change(desired, proposal.metric, `${because}: ${current} → ${desired}`);
  }

  if (recommended < current) {
    const stabilised = Math.max(...recommendations.map((r) => r.desired));
    if (at - state.since < config.scaleDown.stabilisationMs)
      return hold('stabilising', `${because}; observing for less than one stabilisation window`);
    if (stabilised >= current)
      return hold(
        'stabilising',
        `${because}; the highest recommendation in the last ${config.scaleDown.stabilisationMs} ms is ${stabilised}`,
      );
    if (warming > 0) return hold('warming-up', `${because}; ${warming} instance(s) still warming up`);
    if (state.lastChangeAt !== null && at - state.lastChangeAt < config.scaleDown.cooldownMs)
      return hold('scale-down-cooldown', `${because}; last change ${at - state.lastChangeAt} ms ago`);
    const desired = Math.max(stabilised, current - config.scaleDown.maxPods);
    return change(desired, proposal.metric, `${because}: ${current} → ${desired}`);
  }

  return hold('within-tolerance', because);
}

/**
 * The state after the actuator changed the count from `current` to `desired`, at `at`: the moment
 * the change was complete (the clock after the actuator returned), never when it was decided. A
 * PM2 change takes up to a minute and a droplet minutes; a cooldown counted from the decision
 * could be over before the new instances serve, and the next period would reverse the change.
 * A partial change (the actuator failed after moving the count) is recorded with the count it
 * reached: its cooldown starts too.
 */
export function afterChange(
  state: PolicyState,
  change: { readonly current: number; readonly desired: number },
  at: number,
): PolicyState {
  if (change.desired === change.current) return state;
  return {
    ...state,
    lastChangeAt: at,
    lastScaleUpAt: change.desired > change.current ? at : state.lastScaleUpAt,
  };
}

/** Checks a configuration; returns the problems (empty when it is usable). */
export function policyProblems(config: PolicyConfig): string[] {
  const problems: string[] = [];
  const whole = (n: number) => Number.isInteger(n) && n >= 0;
  if (!whole(config.min) || config.min < 1) problems.push('min must be a whole number ≥ 1');
  if (!whole(config.max) || config.max < config.min) problems.push('max must be a whole number ≥ min');
  if (!(config.periodMs > 0)) problems.push('period must be > 0');
  if (!(config.tolerance >= 0 && config.tolerance < 1)) problems.push('tolerance must be in [0, 1)');
  if (!(config.memoryGuard > 0 && config.memoryGuard <= 1)) problems.push('memory guard must be in (0, 1]');
  if (!Object.values(config.targets).some((t) => t !== undefined && t > 0))
    problems.push('at least one metric needs a target > 0');
  for (const [name, t] of Object.entries(config.targets))
    if (t !== undefined && !(t > 0)) problems.push(`target ${name} must be > 0`);
  if (!(config.scaleUp.maxPods >= 1) || !(config.scaleDown.maxPods >= 1))
    problems.push('step limits must be ≥ 1');
  for (const [name, ms] of [
    ['scale-up cooldown', config.scaleUp.cooldownMs],
    ['scale-down cooldown', config.scaleDown.cooldownMs],
    ['stabilisation window', config.scaleDown.stabilisationMs],
    ['warm-up', config.warmupMs],
  ] as const)
    if (!(ms >= 0)) problems.push(`${name} must be ≥ 0`);
  return problems;
}
