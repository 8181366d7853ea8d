import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { parse } from 'yaml';
import {
  postgresExporterQueries,
  prometheusDir,
  renderBlackbox,
  renderPrometheus,
  scrapeJobs,
} from '../../src/ops/monitoring.js';
import { skipUnlessTools, startDaemon, tools, waitFor } from '../harness/monitoring.js';
import { freePort } from '../harness/ports.js';
import { postgresAdminUrl, skipUnless } from '../harness/services.js';

// The shipped Prometheus configuration, checked with Debian's promtool 2.42: the config and rules
// load, every alert's unit tests pass, and every alert is complete (severity, summary,
// description, a runbook section that exists in the README) with a firing and a silent case.

const root = new URL('../..', import.meta.url).pathname;
const testsDir = join(prometheusDir, 'tests');

function promtool(...args: string[]) {
  const result = spawnSync(tools.promtool, args, { cwd: prometheusDir, encoding: 'utf8', timeout: 170_000 });
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}

type Alert = {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
};
const alertRules = (
  parse(readFileSync(join(prometheusDir, 'rules', 'alerts.yml'), 'utf8')) as {
    groups: Array<{ rules: Alert[] }>;
  }
).groups.flatMap((g) => g.rules);

type AlertTest = {
  alertname: string;
  eval_time: string;
  exp_alerts?: Array<{ exp_labels?: Record<string, string>; exp_annotations?: Record<string, string> }>;
};
const testFiles = readdirSync(testsDir).filter((f) => f.endsWith('.test.yml'));
const alertTests: AlertTest[] = testFiles.flatMap((file) =>
  (
    parse(readFileSync(join(testsDir, file), 'utf8')) as { tests: Array<{ alert_rule_test?: AlertTest[] }> }
  ).tests.flatMap((t) => t.alert_rule_test ?? []),
);

/** GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens. */
function readmeAnchors(): Set<string> {
  const anchors = new Set<string>();
  for (const line of readFileSync(join(root, 'README.md'), 'utf8').split('\n')) {
    const heading = /^#{1,6}\s+(.*)$/.exec(line);
    if (heading === null) continue;
    anchors.add(
      (heading[1] as string)
        .trim()
        .toLowerCase()
        .replace(/[^\p{L}\p{N}\s_-]/gu, '')
        .replace(/\s/g, '-'),
    );
  }
  return anchors;
}

describe('deploy/prometheus with promtool', { skip: skipUnlessTools('promtool') }, () => {
  test('promtool check config: prometheus.yml and the rule files it names load', () => {
    const result = promtool('check', 'config', 'prometheus.yml');
    assert.equal(result.status, 0, result.output);
    assert.match(result.output, /SUCCESS: 2 rule files found/);
  });

  test('promtool check rules: recording and alert rules', () => {
    const result = promtool('check', 'rules', 'rules/recording.yml', 'rules/alerts.yml');
    assert.equal(result.status, 0, result.output);
    assert.match(result.output, new RegExp(`SUCCESS: ${alertRules.length} rules found`));
  });

  // One promtool run per file, so each stays well inside the runner's per-test timeout on a busy
  // machine (slo.test.yml takes about 5 s of CPU).
  for (const file of testFiles) {
    test(`promtool test rules tests/${file}: every case passes`, () => {
      const result = promtool('test', 'rules', join('tests', file));
      assert.equal(result.status, 0, result.output);
      assert.match(result.output, /SUCCESS/);
    });
  }

  test('a rendered copy (local stack: 1 s intervals, a shorter `for`) still passes promtool check config', () => {
    const dir = mkdtempSync(join(tmpdir(), 'shipshape-prom-render-'));
    after(() => rmSync(dir, { recursive: true, force: true }));
    const config = renderPrometheus(dir, {
      targets: { shipshape: [{ targets: ['127.0.0.1:9464'], labels: { server: 'app1' } }] },
      interval: '1s',
      alertFor: { TargetDown: '10s' },
    });
    const result = spawnSync(tools.promtool, ['check', 'config', config], { encoding: 'utf8' });
    assert.equal(result.status, 0, `${result.stdout}${result.stderr}`);
    const rendered = readFileSync(join(dir, 'rules', 'alerts.yml'), 'utf8');
    assert.match(rendered, /alert: TargetDown\n\s+expr: up\{autoscaled!="true"\} == 0\n\s+for: 10s/);
    assert.throws(
      () => renderPrometheus(dir, { targets: {}, alertFor: { NoSuchAlert: '1s' } }),
      /NoSuchAlert/,
    );
  });
});

describe('every alert is complete and tested', () => {
  const anchors = readmeAnchors();

  test('the rule file has alerts, each named once', () => {
    assert.ok(alertRules.length >= 20, `only ${alertRules.length} alerts`);
    const names = alertRules.map((r) => r.alert);
    assert.deepEqual(names, [...new Set(names)]);
  });

  for (const rule of alertRules) {
    test(`${rule.alert}: severity, summary, description, runbook in README`, () => {
      assert.ok(
        ['page', 'ticket'].includes(rule.labels?.severity ?? ''),
        `severity ${rule.labels?.severity}`,
      );
      assert.ok((rule.annotations?.summary ?? '').length > 10, 'summary');
      assert.ok((rule.annotations?.description ?? '').length > 10, 'description');
      const runbook = /^README\.md#(runbook-[a-z0-9-]+)$/.exec(rule.annotations?.runbook_url ?? '');
      assert.ok(runbook, `runbook_url ${rule.annotations?.runbook_url}`);
      assert.ok(anchors.has(runbook[1] as string), `README has no section #${runbook[1]}`);
    });

    test(`${rule.alert}: a case where it fires (labels and annotations exact) and one where it must not`, () => {
      const cases = alertTests.filter((t) => t.alertname === rule.alert);
      const firing = cases.filter((t) => (t.exp_alerts ?? []).length > 0);
      const silent = cases.filter((t) => (t.exp_alerts ?? []).length === 0);
      assert.ok(firing.length > 0, 'no firing case');
      assert.ok(silent.length > 0, 'no silent case');
      for (const alert of firing.flatMap((t) => t.exp_alerts ?? [])) {
        assert.equal(alert.exp_labels?.severity, rule.labels?.severity);
        assert.deepEqual(
          Object.keys(alert.exp_annotations ?? {}).sort(),
          Object.keys(rule.annotations ?? {}).sort(),
          'every annotation asserted',
        );
      }
    });
  }
});

describe("the exporters' shipped configuration", () => {
  test('every job has an example targets file: a list of target groups', () => {
    for (const job of scrapeJobs) {
      const groups = JSON.parse(
        readFileSync(join(prometheusDir, 'targets', `${job}.json`), 'utf8'),
      ) as unknown;
      assert.ok(Array.isArray(groups) && groups.length > 0, job);
      for (const group of groups as Array<{ targets: unknown; labels?: unknown }>) {
        assert.ok(Array.isArray(group.targets) && group.targets.every((t) => typeof t === 'string'), job);
        for (const target of group.targets as string[]) assert.match(target, /^[a-z0-9.-]+:\d+$/, job);
      }
    }
  });

  test("blackbox.yml passes the exporter's own --config.check", { skip: skipUnlessTools('blackbox') }, () => {
    const dir = mkdtempSync(join(tmpdir(), 'shipshape-bb-'));
    after(() => rmSync(dir, { recursive: true, force: true }));
    const result = spawnSync(tools.blackbox, ['--config.check', `--config.file=${renderBlackbox(dir)}`], {
      encoding: 'utf8',
    });
    assert.equal(result.status, 0, `${result.stdout}${result.stderr}`);
    assert.match(`${result.stdout}${result.stderr}`, /Config file is ok/);
  });

  test('postgres-exporter-queries.yaml: pg_replication_lag is 0 on a primary', async (t) => {
    const skip = skipUnlessTools('postgresExporter') || (await skipUnless('postgres'));
    if (skip) return t.skip(skip);
    const port = await freePort();
    const url = new URL(postgresAdminUrl);
    url.searchParams.set('sslmode', 'disable');
    const exporter = startDaemon(
      tools.postgresExporter,
      [`--web.listen-address=127.0.0.1:${port}`, `--extend.query-path=${postgresExporterQueries}`],
      { ...process.env, DATA_SOURCE_NAME: url.toString() },
    );
    t.after(() => exporter.stop());
    const text = await waitFor("the exporter's metrics", async () => {
      const body = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      return /^pg_replication_lag/m.test(body) ? body : undefined;
    });
    assert.match(text, /^pg_up 1$/m);
    assert.match(text, /^pg_replication_lag\{[^}]*\} 0$/m);
    assert.match(text, /^pg_replication_is_replica\{[^}]*\} 0$/m);
    assert.match(text, /^pg_settings_max_connections\{[^}]*\} \d+$/m);
    assert.match(text, /^pg_stat_activity_count\{/m);
  });
});
