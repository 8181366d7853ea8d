import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { postgresExporterQueries } from '../../src/ops/monitoring.js';
import { type Daemon, skipUnlessTools, startDaemon, tools, waitFor } from '../harness/monitoring.js';
import { freePort } from '../harness/ports.js';
import { type ReplicatedPostgres, startReplicatedPostgres } from '../harness/replication.js';

/**
 * deploy/prometheus/postgres-exporter-queries.yaml on a real standby and its primary, through the
 * real postgres_exporter: a standby whose WAL receiver stopped is reported as not streaming and
 * not caught up (it used to report 0 s of lag), and the primary reports its slot inactive and
 * behind (decision 0119; the alerts on them are tested with promtool in deploy/prometheus/tests).
 */

async function startExporter(url: string): Promise<{ daemon: Daemon; scrape: () => Promise<string> }> {
  const port = await freePort();
  const dsn = new URL(url);
  dsn.searchParams.set('sslmode', 'disable');
  const daemon = startDaemon(
    tools.postgresExporter,
    [`--web.listen-address=127.0.0.1:${port}`, `--extend.query-path=${postgresExporterQueries}`],
    { ...process.env, DATA_SOURCE_NAME: dsn.toString() },
  );
  return { daemon, scrape: async () => (await fetch(`http://127.0.0.1:${port}/metrics`)).text() };
}

/** The value of a metric (labels ignored except those given), or undefined when absent. */
function value(text: string, name: string, label = ''): number | undefined {
  const match = new RegExp(`^${name}\\{[^}]*${label}[^}]*\\} (\\S+)$`, 'm').exec(text);
  return match === null ? undefined : Number(match[1]);
}

describe('postgres-exporter-queries.yaml on a standby and its primary', {
  skip: skipUnlessTools('postgresExporter'),
}, () => {
  let cluster: ReplicatedPostgres;
  let standby: pg.Client;
  const daemons: Daemon[] = [];

  before(async () => {
    cluster = await startReplicatedPostgres();
    standby = new pg.Client({ connectionString: cluster.standby.url() });
    standby.on('error', () => {});
    await standby.connect();
  });

  after(async () => {
    await Promise.all(daemons.map((d) => d.stop()));
    await standby?.end().catch(() => {});
    cluster?.destroy();
  });

  test('streaming: 1 and lag 0 on the standby; its slot active on the primary. Receiver stopped: 0, lag > 0, slot inactive and behind', async () => {
    const onStandby = await startExporter(cluster.standby.url());
    const onPrimary = await startExporter(cluster.primaryUrl());
    daemons.push(onStandby.daemon, onPrimary.daemon);
    await cluster.waitForCatchUp();
    await waitFor('the standby streaming and caught up, as exported', async () => {
      const text = await onStandby.scrape();
      return value(text, 'pg_replication_streaming') === 1 && value(text, 'pg_replication_lag') === 0
        ? text
        : undefined;
    });
    const primaryText = await waitFor('the slot exported by the primary', async () => {
      const text = await onPrimary.scrape();
      return value(text, 'pg_standby_slot_active', 'slot_name="standby1"') === 1 ? text : undefined;
    });
    assert.equal(value(primaryText, 'pg_replication_is_replica'), 0);
    assert.equal(value(primaryText, 'pg_replication_streaming'), 0);

    const conninfo = (
      await standby.query<{ c: string }>('SELECT current_setting($1) AS c', ['primary_conninfo'])
    ).rows[0]?.c;
    assert.ok(conninfo);
    try {
      await standby.query(
        `ALTER SYSTEM SET primary_conninfo = ${standby.escapeLiteral(conninfo.replace(/port=\d+/, `port=${await freePort()}`))}`,
      );
      await standby.query('SELECT pg_reload_conf()');
      // Writes the standby will not get: the slot falls behind on the primary.
      const writer = new pg.Client({ connectionString: cluster.primaryUrl() });
      await writer.connect();
      await writer.query('CREATE TABLE filler AS SELECT generate_series(1, 20000) AS n');
      await writer.end();
      const standbyText = await waitFor('the standby exported as not streaming', async () => {
        const text = await onStandby.scrape();
        return value(text, 'pg_replication_streaming') === 0 ? text : undefined;
      });
      assert.equal(value(standbyText, 'pg_replication_is_replica'), 1);
      assert.ok((value(standbyText, 'pg_replication_lag') ?? 0) > 0, 'not reported as caught up');
      await waitFor('the slot exported inactive and behind', async () => {
        const text = await onPrimary.scrape();
        return value(text, 'pg_standby_slot_active', 'slot_name="standby1"') === 0 &&
          (value(text, 'pg_standby_slot_behind_bytes', 'slot_name="standby1"') ?? 0) > 100_000
          ? text
          : undefined;
      });
    } finally {
      await standby.query(`ALTER SYSTEM SET primary_conninfo = ${standby.escapeLiteral(conninfo)}`);
      await standby.query('SELECT pg_reload_conf()');
    }
  });
});
