import { appendFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';

/**
 * The webhook receiver Alertmanager posts to out of the box (deploy/alertmanager/alertmanager.yml):
 * each notification (Alertmanager webhook payload, version 4) is appended as one JSON line to a
 * log, and the most recent ones are kept in memory for GET /alerts. It is what works without any
 * account anywhere; Slack or PagerDuty receivers replace it (README "Monitoring and alerting").
 */

export interface AlertNotification {
  readonly receivedAt: string;
  /** The receiver named in the URL path (/alerts/<receiver>). */
  readonly receiver: string;
  readonly status: 'firing' | 'resolved';
  readonly groupLabels: Readonly<Record<string, string>>;
  readonly alerts: ReadonlyArray<{
    readonly status: 'firing' | 'resolved';
    readonly labels: Readonly<Record<string, string>>;
    readonly annotations: Readonly<Record<string, string>>;
    readonly startsAt: string;
    readonly endsAt: string;
  }>;
}

export interface AlertWebhook {
  readonly url: string;
  /** The notifications received so far (the last `keep`), oldest first. */
  readonly received: readonly AlertNotification[];
  close(): Promise<void>;
}

const maxBodyBytes = 1024 * 1024;

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function stringRecord(value: unknown): Record<string, string> {
  if (!isRecord(value)) return {};
  return Object.fromEntries(
    Object.entries(value).filter((e): e is [string, string] => typeof e[1] === 'string'),
  );
}

/** Validates an Alertmanager payload and keeps only the fields we log; undefined if it is not one. */
export function parseNotification(
  receiver: string,
  body: unknown,
  now = new Date(),
): AlertNotification | undefined {
  if (!isRecord(body) || body.version !== '4' || !Array.isArray(body.alerts)) return undefined;
  const status = body.status;
  if (status !== 'firing' && status !== 'resolved') return undefined;
  const alerts = body.alerts.filter(isRecord).map((alert) => ({
    status: alert.status === 'resolved' ? ('resolved' as const) : ('firing' as const),
    labels: stringRecord(alert.labels),
    annotations: stringRecord(alert.annotations),
    startsAt: typeof alert.startsAt === 'string' ? alert.startsAt : '',
    endsAt: typeof alert.endsAt === 'string' ? alert.endsAt : '',
  }));
  return {
    receivedAt: now.toISOString(),
    receiver,
    status,
    groupLabels: stringRecord(body.groupLabels),
    alerts,
  };
}

export async function startAlertWebhook(options: {
  host: string;
  port: number;
  /** JSON-lines file to append to; undefined: memory only. */
  logFile?: string;
  keep?: number;
  onNotification?: (notification: AlertNotification) => void;
}): Promise<AlertWebhook> {
  const received: AlertNotification[] = [];
  const keep = options.keep ?? 1000;
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    if (req.method === 'GET' && path === '/alerts') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(received));
      return;
    }
    const match = /^\/alerts\/([A-Za-z0-9_-]{1,64})$/.exec(path);
    if (req.method !== 'POST' || match === null) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('Not found\n');
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBodyBytes) {
        res.writeHead(413, { 'content-type': 'text/plain', connection: 'close' }).end('Too large\n');
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (res.headersSent) return;
      let body: unknown;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch {
        body = undefined;
      }
      const notification = parseNotification(match[1] as string, body);
      if (notification === undefined) {
        res.writeHead(400, { 'content-type': 'text/plain' }).end('Not an Alertmanager webhook payload\n');
        return;
      }
      received.push(notification);
      if (received.length > keep) received.splice(0, received.length - keep);
      if (options.logFile !== undefined) appendFileSync(options.logFile, `${JSON.stringify(notification)}\n`);
      options.onNotification?.(notification);
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => resolve());
  });
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : options.port;
  return {
    url: `http://${options.host}:${port}`,
    received,
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
