import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { test } from 'node:test';

// promtool 2.42 does not read file_sd files, so a broken or orphaned targets file would only show in
// production as a job with no targets. Each shipped file must be one prometheus.yml names, and be
// valid file-based service discovery: an array of { targets: ["host:port", …], labels?: {…} }.
const dir = 'deploy/prometheus/targets';
const expected = [
  'alertmanager.json',
  'autoscaler.json',
  'blackbox.json',
  'nginx.json',
  'node.json',
  'postgres.json',
  'prometheus.json',
  'redis.json',
  'shipshape.json',
];

test('every targets/*.json is named by prometheus.yml and is valid file_sd', () => {
  const files = readdirSync(dir).filter((f) => f.endsWith('.json'));
  assert.deepEqual(files.sort(), expected);
  const config = readFileSync('deploy/prometheus/prometheus.yml', 'utf8');
  for (const file of files) {
    assert.match(
      config,
      new RegExp(`files: \\[targets/${file.replace('.', '\\.')}\\]`),
      `${file} in prometheus.yml`,
    );
    const groups: unknown = JSON.parse(readFileSync(`${dir}/${file}`, 'utf8'));
    assert.ok(Array.isArray(groups) && groups.length > 0, `${file}: an array of target groups`);
    for (const group of groups as Array<Record<string, unknown>>) {
      const { targets, labels, ...rest } = group;
      assert.deepEqual(Object.keys(rest), [], `${file}: only targets and labels`);
      assert.ok(Array.isArray(targets) && targets.length > 0, `${file}: targets`);
      for (const target of targets)
        assert.match(String(target), /^[\w.-]+:\d+$/, `${file}: ${target} is host:port`);
      if (labels !== undefined) {
        for (const [name, value] of Object.entries(labels as Record<string, unknown>)) {
          assert.match(name, /^[a-zA-Z_]\w*$/, `${file}: label name ${name}`);
          assert.equal(typeof value, 'string', `${file}: label ${name} is a string`);
        }
      }
    }
  }
});
