import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import pg from 'pg';
import type { MonitoringStatus } from '../../stack/components/monitoring.js';
import type { StackStatus } from '../../stack/types.js';
import { isAlive, portInUse, waitFor } from '../../stack/util.js';
import { postgresAdminUrl } from '../harness/services.js';

/** Every port a status names, with its host. */
export function stackPorts(status: StackStatus): Array<{ host: string; port: number }> {
  const urls = [
    ...(typeof status.entry === 'string' ? [status.entry] : [status.entry.http, status.entry.https]),
    ...status.servers.flatMap((s) => [s.url, ...s.metricsUrls]),
    ...(status.redis ? [status.redis.url] : []),
    ...monitoringUrls(status),
  ];
  return urls.map((u) => {
    const url = new URL(u);
    return { host: url.hostname, port: Number(url.port) };
  });
}

/** `--monitoring`: Prometheus, Alertmanager, the webhook and the exporters. */
function monitoringUrls(status: StackStatus): string[] {
  const m = status.components.monitoring as MonitoringStatus | undefined;
  return m === undefined ? [] : [m.prometheus, m.alertmanager, m.webhook, ...Object.values(m.exporters)];
}

export function stackPids(status: StackStatus): number[] {
  const m = status.components.monitoring as MonitoringStatus | undefined;
  return [
    ...status.servers.flatMap((s) => s.pids),
    ...(status.nginx?.pid ? [status.nginx.pid] : []),
    ...(m?.pids ?? []),
    ...componentPids(status),
  ];
}

/** The scale stage's clusters and PgBouncer, and --autoscale's monitors. */
function componentPids(status: StackStatus): number[] {
  const c = status.components as {
    replication?: { primary: { pid: number | null }; replicas: { pid: number | null }[] } | null;
    pgbouncer?: { pid: number | null } | null;
    autoscaler?: { monitors: { pid: number | null }[] } | null;
  };
  return [
    c.replication?.primary.pid,
    ...(c.replication?.replicas.map((r) => r.pid) ?? []),
    c.pgbouncer?.pid,
    ...(c.autoscaler?.monitors.map((m) => m.pid) ?? []),
  ].filter((p): p is number => typeof p === 'number');
}

/** After `down`: no process, port, state directory or throwaway database of the stack remains. */
export async function assertNothingLeft(before: StackStatus): Promise<void> {
  const pids = stackPids(before);
  assert.ok(pids.length > 0, 'the status named processes');
  await waitFor('every stack process to be gone', () => pids.every((p) => !isAlive(p)), 30_000);
  for (const { host, port } of stackPorts(before))
    assert.equal(await portInUse(port, host), false, `${host}:${port} is still in use`);
  assert.equal(existsSync(before.stateDir), false, 'the state directory is removed');
  // Throwaway databases on the machine's server (the scale stage's own clusters go with their directory).
  const shared = new URL(postgresAdminUrl);
  const names = before.databases
    .filter((d) => d.url.startsWith('postgres'))
    .filter((d) => {
      const url = new URL(d.url);
      return (
        (url.port || '5432') === (shared.port || '5432') &&
        !url.searchParams.has('host') &&
        d.role === 'primary'
      );
    })
    .map((d) => new URL(d.url).pathname.slice(1));
  if (names.length > 0) {
    const client = new pg.Client({ connectionString: postgresAdminUrl });
    await client.connect();
    try {
      const { rows } = await client.query('SELECT datname FROM pg_database WHERE datname = ANY($1)', [names]);
      assert.deepEqual(rows, [], 'the throwaway databases are dropped');
    } finally {
      await client.end();
    }
  }
}
