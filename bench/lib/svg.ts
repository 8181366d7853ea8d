/**
 * The benchmark's chart: each scenario's ratio to its baseline (median of the interleaved rounds,
 * with the min–max range and the goal), and each target's p50/p95/p99 latency. Plain SVG, no
 * dependencies, written next to the Markdown and JSON results; the README links the latest one.
 */

export interface RatioBar {
  readonly label: string;
  readonly median: number;
  readonly min: number;
  readonly max: number;
  /** The goal for this ratio, drawn as a tick. */
  readonly goal?: number;
  /** The rounds disagree by more than the run's margin. */
  readonly flagged?: boolean;
}

export interface LatencyRow {
  readonly label: string;
  readonly p50: number;
  readonly p95: number;
  readonly p99: number;
}

export interface Chart {
  readonly title: string;
  readonly subtitle: string;
  readonly ratios: readonly RatioBar[];
  readonly latencies: readonly LatencyRow[];
}

export function escapeXml(text: string): string {
  return text
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&apos;');
}

const width = 1000;
const labelWidth = 430;
const plotWidth = width - labelWidth - 90;
const rowHeight = 22;

/** A log scale from `lo` to `hi` onto [0, plotWidth]. */
function logScale(lo: number, hi: number): (v: number) => number {
  const a = Math.log10(lo);
  const b = Math.log10(hi);
  return (v: number) => ((Math.log10(Math.min(Math.max(v, lo), hi)) - a) / (b - a)) * plotWidth;
}

function decades(lo: number, hi: number): number[] {
  const ticks: number[] = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** e;
      if (v >= lo * 0.999 && v <= hi * 1.001) ticks.push(Number(v.toPrecision(3)));
    }
  }
  return ticks;
}

function num(v: number, digits = 2): string {
  return Number.isFinite(v) ? v.toFixed(digits) : 'n/a';
}

function axis(
  x0: number,
  y0: number,
  height: number,
  ticks: number[],
  at: (v: number) => number,
  unit: string,
): string[] {
  return ticks.map((t) => {
    const x = (x0 + at(t)).toFixed(1);
    return `<line x1="${x}" y1="${y0}" x2="${x}" y2="${y0 + height}" stroke="#ddd"/><text x="${x}" y="${y0 + height + 14}" font-size="10" text-anchor="middle" fill="#666">${t}${unit}</text>`;
  });
}

export function renderChart(chart: Chart): string {
  const parts: string[] = [];
  let y = 20;
  parts.push(`<text x="10" y="${y}" font-size="16" font-weight="bold">${escapeXml(chart.title)}</text>`);
  y += 18;
  parts.push(`<text x="10" y="${y}" font-size="11" fill="#555">${escapeXml(chart.subtitle)}</text>`);
  y += 26;

  // Panel 1: ratios to the baseline, log scale.
  const ratioValues = chart.ratios
    .flatMap((r) => [r.min, r.max, r.median, r.goal ?? 1])
    .filter((v) => v > 0 && Number.isFinite(v));
  const rLo = Math.min(0.05, ...ratioValues.map((v) => v / 1.5));
  const rHi = Math.max(2, ...ratioValues.map((v) => v * 1.5));
  const rx = logScale(rLo, rHi);
  parts.push(
    `<text x="10" y="${y}" font-size="13" font-weight="bold">Ratio to the baseline (median of the rounds, bar = min–max, | = goal; log scale)</text>`,
  );
  y += 10;
  const panel1Top = y;
  const panel1Height = chart.ratios.length * rowHeight;
  parts.push(...axis(labelWidth, panel1Top, panel1Height, decades(rLo, rHi), rx, '×'));
  const one = (labelWidth + rx(1)).toFixed(1);
  parts.push(
    `<line x1="${one}" y1="${panel1Top}" x2="${one}" y2="${panel1Top + panel1Height}" stroke="#999" stroke-dasharray="4 3"/>`,
  );
  for (const [i, r] of chart.ratios.entries()) {
    const cy = panel1Top + i * rowHeight + rowHeight / 2;
    const color =
      r.goal !== undefined && r.median >= r.goal ? '#2e7d32' : r.goal !== undefined ? '#c62828' : '#1565c0';
    parts.push(
      `<text x="${labelWidth - 8}" y="${cy + 4}" font-size="11" text-anchor="end">${escapeXml(r.label)}</text>`,
    );
    if (Number.isFinite(r.median) && r.median > 0) {
      parts.push(
        `<rect x="${labelWidth}" y="${cy - 6}" width="${rx(r.median).toFixed(1)}" height="12" fill="${color}" opacity="0.75"/>`,
      );
      parts.push(
        `<line x1="${(labelWidth + rx(r.min)).toFixed(1)}" y1="${cy}" x2="${(labelWidth + rx(r.max)).toFixed(1)}" y2="${cy}" stroke="#000" stroke-width="1.5"/>`,
      );
    }
    if (r.goal !== undefined) {
      const gx = (labelWidth + rx(r.goal)).toFixed(1);
      parts.push(
        `<line x1="${gx}" y1="${cy - 9}" x2="${gx}" y2="${cy + 9}" stroke="#000" stroke-width="2"/>`,
      );
    }
    const goal = r.goal === undefined ? '' : ` / goal ${num(r.goal)}×`;
    parts.push(
      `<text x="${labelWidth + plotWidth + 6}" y="${cy + 4}" font-size="11">${num(r.median)}×${goal}${r.flagged ? ' ⚠' : ''}</text>`,
    );
  }
  y = panel1Top + panel1Height + 40;

  // Panel 2: latency percentiles, log scale.
  const ms = chart.latencies.flatMap((l) => [l.p50, l.p95, l.p99]).filter((v) => v > 0 && Number.isFinite(v));
  const lLo = Math.min(0.5, ...ms.map((v) => v / 1.5));
  const lHi = Math.max(10, ...ms.map((v) => v * 1.5));
  const lx = logScale(lLo, lHi);
  parts.push(
    `<text x="10" y="${y}" font-size="13" font-weight="bold">Latency of the median round: ● p50  ◆ p95  ▲ p99 (ms, log scale)</text>`,
  );
  y += 10;
  const panel2Top = y;
  const panel2Height = chart.latencies.length * rowHeight;
  parts.push(...axis(labelWidth, panel2Top, panel2Height, decades(lLo, lHi), lx, ''));
  for (const [i, l] of chart.latencies.entries()) {
    const cy = panel2Top + i * rowHeight + rowHeight / 2;
    parts.push(
      `<text x="${labelWidth - 8}" y="${cy + 4}" font-size="11" text-anchor="end">${escapeXml(l.label)}</text>`,
    );
    const x50 = labelWidth + lx(l.p50);
    const x95 = labelWidth + lx(l.p95);
    const x99 = labelWidth + lx(l.p99);
    parts.push(`<line x1="${x50.toFixed(1)}" y1="${cy}" x2="${x99.toFixed(1)}" y2="${cy}" stroke="#999"/>`);
    parts.push(`<circle cx="${x50.toFixed(1)}" cy="${cy}" r="4" fill="#1565c0"/>`);
    parts.push(
      `<rect x="${(x95 - 4).toFixed(1)}" y="${cy - 4}" width="8" height="8" fill="#ef6c00" transform="rotate(45 ${x95.toFixed(1)} ${cy})"/>`,
    );
    parts.push(`<path d="M ${x99.toFixed(1)} ${cy - 5} l 5 9 h -10 z" fill="#c62828"/>`);
    parts.push(
      `<text x="${labelWidth + plotWidth + 6}" y="${cy + 4}" font-size="10">${num(l.p50)} / ${num(l.p95)} / ${num(l.p99)}</text>`,
    );
  }
  const height = panel2Top + panel2Height + 30;
  return `<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif">\n<rect width="100%" height="100%" fill="#fff"/>\n${parts.join('\n')}\n</svg>\n`;
}
