import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { parse } from 'yaml';

// The Grafana dashboard and its provisioning, checked the way grafana/dashboard-linter would (its
// Go binary cannot be installed here): one fixed datasource uid that the provisioning defines,
// job and instance variables, a title, description and unit on every panel, counters only inside
// rate(), $__rate_interval for rates. Grafana itself is not in Debian bookworm, so the queries are
// run against a live Prometheus instead (test/ops/monitoring-live.test.ts: every panel has data).

const root = new URL('../..', import.meta.url).pathname;
const grafana = join(root, 'deploy', 'grafana');

type Target = { refId: string; expr: string; datasource: { uid: string } };
type Panel = {
  id: number;
  type: string;
  title: string;
  description?: string;
  datasource?: { type: string; uid: string };
  fieldConfig?: { defaults?: { unit?: string } };
  targets?: Target[];
};
const dashboard = JSON.parse(readFileSync(join(grafana, 'dashboards', 'shipshape.json'), 'utf8')) as {
  uid: string;
  title: string;
  editable: boolean;
  templating: { list: Array<{ name: string; allValue?: string }> };
  panels: Panel[];
};
const datasources = parse(
  readFileSync(join(grafana, 'provisioning', 'datasources', 'prometheus.yml'), 'utf8'),
) as {
  datasources: Array<{ uid: string; type: string }>;
};
const providers = parse(
  readFileSync(join(grafana, 'provisioning', 'dashboards', 'shipshape.yml'), 'utf8'),
) as {
  providers: Array<{ type: string; options: { path: string } }>;
};

const panels = dashboard.panels.filter((p) => p.type !== 'row');

test('provisioning: one Prometheus datasource with the fixed uid, one file provider', () => {
  assert.deepEqual(
    datasources.datasources.map((d) => [d.type, d.uid]),
    [['prometheus', 'shipshape-prometheus']],
  );
  assert.equal(providers.providers.length, 1);
  assert.equal(providers.providers[0]?.type, 'file');
  assert.equal(dashboard.uid, 'shipshape-overview');
  assert.equal(dashboard.editable, false);
});

test('variables: job and instance (All matches every instance)', () => {
  const names = dashboard.templating.list.map((v) => v.name);
  assert.deepEqual(names, ['job', 'instance']);
  assert.equal(dashboard.templating.list[1]?.allValue, '.+');
});

test('the panels the issue asks for are there', () => {
  const titles = panels.map((p) => p.title).join('\n');
  for (const wanted of [
    /Request rate by route/,
    /5xx rate by route/,
    /p95 latency by route/,
    /In-flight requests/,
    /Cache hit ratio/,
    /Event-loop delay/,
    /Database pool in use/,
    /Orders per minute/,
    /budget burn rate/,
    /by instance/,
  ]) {
    assert.match(titles, wanted);
  }
});

for (const panel of panels) {
  test(`panel "${panel.title}": datasource, description, unit, targets, counters in rate()`, () => {
    assert.equal(panel.datasource?.uid, 'shipshape-prometheus');
    assert.ok((panel.description ?? '').length > 10, 'description');
    assert.ok((panel.fieldConfig?.defaults?.unit ?? '') !== '', 'unit');
    assert.ok((panel.targets ?? []).length > 0, 'no targets');
    for (const target of panel.targets ?? []) {
      assert.equal(target.datasource.uid, 'shipshape-prometheus');
      // A `_total` counter read raw is a number that only grows: always rate(), irate() or increase()
      // (or count(), which counts series, not values).
      const counters = target.expr.match(/\b\w+_total\b/g) ?? [];
      for (const counter of counters) {
        assert.match(
          target.expr,
          new RegExp(`(rate|increase|count by \\([^)]*\\) )\\(${counter}\\b`),
          `${counter} outside rate()`,
        );
      }
      if (/\brate\(/.test(target.expr) && target.expr.includes('http_requests_total')) {
        assert.match(target.expr, /\$__rate_interval/);
      }
      if (target.expr.includes('$job') || /http_|nodejs_|db_pool|orders_|cache_|process_/.test(target.expr)) {
        assert.match(target.expr, /job="\$job"/, 'app queries select the job variable');
      }
    }
  });
}
