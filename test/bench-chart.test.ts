import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, test } from 'node:test';
import { formatRatio, median, summarizeRatios } from '../bench/lib/rounds.js';
import { renderChart } from '../bench/lib/svg.js';
import { inCi } from './harness/services.js';

function skipUnlessXmllint(): string | false {
  if (spawnSync('xmllint', ['--version']).status === 0) return false;
  const message = 'xmllint is not installed (libxml2-utils): sudo scripts/install-ops-tools.sh';
  if (inCi) throw new Error(`CI requires ${message}`);
  return message;
}

const chart = {
  title: 'Benchmark <2026-12-02> & friends',
  subtitle: 'a "shared" machine',
  ratios: [
    { label: '1 in-process vs bare node:http', median: 0.2531, min: 0.2417, max: 0.2689, goal: 0.5 },
    { label: '3 orders vs pgbench', median: 0.6123, min: 0.58, max: 0.71, goal: 0.6, flagged: true },
  ],
  latencies: [
    { label: 'service, SQLite', p50: 3.06, p95: 4.29, p99: 6.49 },
    { label: 'orders <PostgreSQL>', p50: 49.6, p95: 64.08, p99: 98.25 },
  ],
};

describe('benchmark chart (bench/lib/svg.ts)', () => {
  test('is well-formed SVG (xmllint) with every figure and label in it', {
    skip: skipUnlessXmllint(),
  }, () => {
    const svg = renderChart(chart);
    const lint = spawnSync('xmllint', ['--noout', '-'], { input: svg, encoding: 'utf8' });
    assert.equal(lint.status, 0, lint.stderr);
    assert.match(svg, /<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
    for (const figure of [
      '0.25×',
      '0.61×',
      'goal 0.50×',
      'goal 0.60×',
      '3.06 / 4.29 / 6.49',
      '49.60 / 64.08 / 98.25',
    ])
      assert.ok(svg.includes(figure), figure);
    assert.ok(svg.includes('orders &lt;PostgreSQL&gt;'), 'labels are escaped');
    assert.ok(svg.includes('Benchmark &lt;2026-12-02&gt; &amp; friends'));
    // One bar per ratio (plus the background), one p50 dot per latency row.
    assert.equal((svg.match(/<circle /g) ?? []).length, 2);
    assert.equal((svg.match(/<rect x="430"/g) ?? []).length, 2);
  });

  test('a ratio with no figure (a skipped scenario) still gives valid XML', {
    skip: skipUnlessXmllint(),
  }, () => {
    const svg = renderChart({
      ...chart,
      ratios: [{ label: 'skipped', median: Number.NaN, min: Number.NaN, max: Number.NaN }],
      latencies: [],
    });
    const lint = spawnSync('xmllint', ['--noout', '-'], { input: svg, encoding: 'utf8' });
    assert.equal(lint.status, 0, lint.stderr);
    assert.ok(svg.includes('n/a×'));
  });
});

describe('interleaved rounds (bench/lib/rounds.ts)', () => {
  test('median ratio with its range; rounds that disagree beyond the margin are flagged', () => {
    assert.equal(median([3, 1, 2]), 2);
    assert.equal(median([4, 1, 2, 3]), 2.5);
    const steady = summarizeRatios([0.5, 0.52, 0.49], 0.2);
    assert.equal(steady.median, 0.5);
    assert.equal(steady.flagged, false);
    assert.equal(formatRatio(steady), '0.50× (0.49–0.52)');
    const noisy = summarizeRatios([0.17, 0.35, 0.3], 0.2);
    assert.equal(noisy.median, 0.3);
    assert.ok(Math.abs(noisy.spread - 0.6) < 1e-9);
    assert.equal(noisy.flagged, true);
    assert.equal(formatRatio(noisy), '0.30× (0.17–0.35) ⚠');
    assert.equal(summarizeRatios([0.4], 0.2).flagged, false, 'one round (a smoke run) cannot disagree');
  });
});
