/**
 * The q-quantile of a histogram's cumulative bucket counts (bounds ascending, `+Inf` last), as
 * Prometheus's `histogram_quantile` computes it: interpolated within its bucket, the highest finite
 * bound when it falls in `+Inf`; null when the buckets hold no observation.
 */
export function quantile(q: number, bounds: readonly number[], cumulative: readonly number[]): number | null {
  const total = cumulative.at(-1) ?? 0;
  if (total === 0) return null;
  const rank = q * total;
  for (let i = 0; i < bounds.length; i++) {
    const count = cumulative[i] ?? 0;
    if (count >= rank) {
      const upper = bounds[i] ?? 0;
      const lower = i === 0 ? 0 : (bounds[i - 1] ?? 0);
      if (upper === Number.POSITIVE_INFINITY) return lower;
      const below = i === 0 ? 0 : (cumulative[i - 1] ?? 0);
      return count === below ? upper : lower + ((upper - lower) * (rank - below)) / (count - below);
    }
  }
  return bounds.at(-2) ?? null;
}
