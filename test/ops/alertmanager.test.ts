import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type AlertWebhook, parseNotification, startAlertWebhook } from '../../src/ops/alert-webhook.js';
import { alertmanagerDir, renderAlertmanager } from '../../src/ops/monitoring.js';
import { type Daemon, skipUnlessTools, startDaemon, tools, waitFor } from '../harness/monitoring.js';
import { freePort } from '../harness/ports.js';

// The shipped Alertmanager configuration: amtool accepts it and routes each severity to its
// receiver; a real Alertmanager, fed alerts through its API, notifies the bundled webhook receiver
// and inhibits a ticket while a page of the same job fires.

const shipped = join(alertmanagerDir, 'alertmanager.yml');

function amtool(...args: string[]) {
  const result = spawnSync(tools.amtool, args, { encoding: 'utf8', timeout: 60_000 });
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}

describe('deploy/alertmanager with amtool', { skip: skipUnlessTools('amtool') }, () => {
  test('amtool check-config', () => {
    const result = amtool('check-config', shipped);
    assert.equal(result.status, 0, result.output);
    assert.match(result.output, /SUCCESS/);
    assert.match(result.output, /1 inhibit rules/);
    assert.match(result.output, /2 receivers/);
  });

  // One routing test per route: `--verify.receivers` makes amtool exit 1 on a mismatch.
  const routes: Array<[labels: string[], receiver: string]> = [
    [['alertname=ServiceDown', 'severity=page', 'job=shipshape'], 'pager'],
    [['alertname=TargetDown', 'severity=ticket', 'job=shipshape', 'instance=127.0.0.2:9464'], 'tickets'],
    [['alertname=SomethingUnlabelled', 'job=shipshape'], 'tickets'],
  ];
  for (const [labels, receiver] of routes) {
    test(`amtool config routes test: ${labels.join(' ')} → ${receiver}`, () => {
      const result = amtool(
        'config',
        'routes',
        'test',
        `--config.file=${shipped}`,
        `--verify.receivers=${receiver}`,
        ...labels,
      );
      assert.equal(result.status, 0, result.output);
      assert.equal(result.output.split('\n')[0]?.trim(), receiver);
    });
  }

  test('a mismatched route makes amtool fail (the check can fail)', () => {
    const result = amtool(
      'config',
      'routes',
      'test',
      `--config.file=${shipped}`,
      '--verify.receivers=pager',
      'severity=ticket',
    );
    assert.equal(result.status, 1, result.output);
  });

  test('the rendered copy points every receiver at the webhook and still passes check-config', () => {
    const dir = mkdtempSync(join(tmpdir(), 'shipshape-am-render-'));
    after(() => rmSync(dir, { recursive: true, force: true }));
    const path = renderAlertmanager(dir, { webhookUrl: 'http://127.0.0.1:1234/', fast: true });
    const result = amtool('check-config', path);
    assert.equal(result.status, 0, result.output);
    const text = readFileSync(path, 'utf8');
    assert.match(text, /url: http:\/\/127\.0\.0\.1:1234\/alerts\/pager/);
    assert.match(text, /url: http:\/\/127\.0\.0\.1:1234\/alerts\/tickets/);
    assert.doesNotMatch(text, /group_interval: 5m/);
  });
});

describe('a real Alertmanager with the shipped routes', { skip: skipUnlessTools('alertmanager') }, () => {
  let dir: string;
  let webhook: AlertWebhook;
  let alertmanager: Daemon;
  let url: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'shipshape-am-'));
    webhook = await startAlertWebhook({ host: '127.0.0.1', port: 0, logFile: join(dir, 'alerts.jsonl') });
    const config = renderAlertmanager(dir, { webhookUrl: webhook.url, fast: true });
    const port = await freePort();
    url = `http://127.0.0.1:${port}`;
    alertmanager = startDaemon(tools.alertmanager, [
      `--config.file=${config}`,
      `--storage.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--cluster.listen-address=',
      '--log.level=warn',
    ]);
    await waitFor('Alertmanager ready', async () => ((await fetch(`${url}/-/ready`)).ok ? true : undefined));
  });

  after(async () => {
    await alertmanager?.stop();
    await webhook?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('a page reaches pager, a ticket reaches tickets, and a page inhibits its job’s tickets', async () => {
    const alert = (labels: Record<string, string>) => ({
      labels,
      annotations: { summary: `${labels.alertname} test`, runbook_url: 'README.md#runbook-targetdown' },
      startsAt: new Date().toISOString(),
    });
    const posted = await fetch(`${url}/api/v2/alerts`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify([
        alert({ alertname: 'ServiceDown', severity: 'page', job: 'shipshape' }),
        alert({ alertname: 'TargetDown', severity: 'ticket', job: 'shipshape', instance: '127.0.0.2:9464' }),
        alert({ alertname: 'RedisDown', severity: 'ticket', job: 'redis', instance: '127.0.0.1:9121' }),
      ]),
    });
    assert.equal(posted.status, 200, await posted.text());

    const byName = (name: string) =>
      webhook.received.find((n) => n.alerts.some((a) => a.labels.alertname === name));
    const page = await waitFor('the page notification', async () => byName('ServiceDown'));
    assert.equal(page.receiver, 'pager');
    assert.equal(page.status, 'firing');
    assert.deepEqual(page.groupLabels, { alertname: 'ServiceDown', job: 'shipshape' });
    const ticket = await waitFor('the ticket notification', async () => byName('RedisDown'));
    assert.equal(ticket.receiver, 'tickets');

    // The ticket of the paged job is held back: Alertmanager marks it inhibited by the page.
    const inhibited = await waitFor('TargetDown marked inhibited', async () => {
      const alerts = (await (await fetch(`${url}/api/v2/alerts?inhibited=true`)).json()) as Array<{
        labels: Record<string, string>;
        status: { state: string; inhibitedBy: string[] };
      }>;
      const found = alerts.find((a) => a.labels.alertname === 'TargetDown');
      return found?.status.state === 'suppressed' ? found : undefined;
    });
    assert.equal(inhibited.status.inhibitedBy.length, 1);
    assert.equal(byName('TargetDown'), undefined, 'an inhibited ticket was sent');

    const log = readFileSync(join(dir, 'alerts.jsonl'), 'utf8').trim().split('\n');
    assert.equal(log.length, webhook.received.length);
  });
});

test('the webhook receiver accepts only Alertmanager payloads', async () => {
  assert.equal(parseNotification('pager', { version: '3', status: 'firing', alerts: [] }), undefined);
  assert.equal(parseNotification('pager', { version: '4', status: 'bogus', alerts: [] }), undefined);
  const webhook = await startAlertWebhook({ host: '127.0.0.1', port: 0 });
  try {
    const bad = await fetch(`${webhook.url}/alerts/pager`, { method: 'POST', body: 'not json' });
    assert.equal(bad.status, 400);
    const wrongPath = await fetch(`${webhook.url}/elsewhere`, { method: 'POST', body: '{}' });
    assert.equal(wrongPath.status, 404);
    const ok = await fetch(`${webhook.url}/alerts/pager`, {
      method: 'POST',
      body: JSON.stringify({
        version: '4',
        status: 'resolved',
        groupLabels: { alertname: 'X' },
        alerts: [
          { status: 'resolved', labels: { alertname: 'X' }, annotations: {}, startsAt: 'a', endsAt: 'b' },
        ],
      }),
    });
    assert.equal(ok.status, 200);
    const listed = (await (await fetch(`${webhook.url}/alerts`)).json()) as unknown[];
    assert.equal(listed.length, 1);
  } finally {
    await webhook.close();
  }
});
