import { parseArgs } from 'node:util';
import { startAlertWebhook } from '../ops/alert-webhook.js';

/**
 * `npm run alerts:webhook -- [--host 127.0.0.1] [--port 9095] [--log logs/alerts.jsonl]`: the
 * receiver deploy/alertmanager/alertmanager.yml posts to out of the box. Prints one line per alert
 * and appends each notification to the log as JSON. Stops on SIGINT/SIGTERM.
 */
const usage = 'usage: npm run alerts:webhook -- [--host 127.0.0.1] [--port 9095] [--log FILE]';
let values: { host?: string; port?: string; log?: string };
try {
  ({ values } = parseArgs({
    options: { host: { type: 'string' }, port: { type: 'string' }, log: { type: 'string' } },
    strict: true,
  }));
} catch (err) {
  console.error(`${err instanceof Error ? err.message : String(err)}\n${usage}`);
  process.exit(2);
}
const port = Number(values.port ?? 9095);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`--port must be a TCP port, got ${values.port}\n${usage}`);
  process.exit(2);
}
const host = values.host ?? '127.0.0.1';
const webhook = await startAlertWebhook({
  host,
  port,
  ...(values.log === undefined ? {} : { logFile: values.log }),
  onNotification: (n) => {
    for (const alert of n.alerts) {
      console.log(
        `${n.receivedAt} ${n.receiver} ${alert.status.toUpperCase()} ${alert.labels.alertname ?? '?'} ` +
          `severity=${alert.labels.severity ?? '?'} ${alert.annotations.summary ?? ''}`,
      );
    }
  },
});
console.log(
  `alert webhook listening on ${webhook.url} (Alertmanager posts to ${webhook.url}/alerts/<receiver>)`,
);
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    webhook.close().then(() => process.exit(0));
  });
}
