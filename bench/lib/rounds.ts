/**
 * Interleaved rounds: each scenario runs beside its baseline (A, B, A, B …), a ratio is computed
 * per round, and the run reports the median ratio with its range. A run whose rounds disagree by
 * more than the margin — (max − min) / median of the per-round ratios — is flagged, not trusted.
 */

export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

export interface RatioSummary {
  readonly median: number;
  readonly min: number;
  readonly max: number;
  readonly rounds: readonly number[];
  /** (max − min) / median. */
  readonly spread: number;
  /** spread > margin. */
  readonly flagged: boolean;
}

export function summarizeRatios(perRound: readonly number[], margin: number): RatioSummary {
  const finite = perRound.filter((r) => Number.isFinite(r));
  const m = median(finite);
  const min = Math.min(...finite);
  const max = Math.max(...finite);
  const spread = finite.length > 0 && m > 0 ? (max - min) / m : 0;
  return { median: m, min, max, rounds: finite, spread, flagged: finite.length > 1 && spread > margin };
}

/** "0.25× (0.23–0.27)" */
export function formatRatio(summary: RatioSummary | undefined): string {
  if (summary === undefined || !Number.isFinite(summary.median)) return 'n/a';
  const range = summary.rounds.length > 1 ? ` (${summary.min.toFixed(2)}–${summary.max.toFixed(2)})` : '';
  return `${summary.median.toFixed(2)}×${range}${summary.flagged ? ' ⚠' : ''}`;
}
