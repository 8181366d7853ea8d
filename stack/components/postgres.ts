import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import type { Component, StackState } from '../types.js';

const run = promisify(execFile);

interface Record {
  adminUrl: string;
  database: string;
}

export const defaultPostgresAdminUrl = 'postgres://postgres@127.0.0.1:5432/postgres';

async function admin<T>(adminUrl: string, work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: adminUrl, connectionTimeoutMillis: 10_000 });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

/**
 * A throwaway database on an existing PostgreSQL server (the stack creates it, migrates it, and
 * drops it on `down`: it never touches a database it did not create). Publishes the primary in
 * `databases` and DATABASE_URL for the app servers.
 */
export function postgresDatabase(): Component {
  return {
    name: 'postgres',
    async up(ctx) {
      const adminUrl =
        ctx.options.postgresAdminUrl ?? process.env.STACK_POSTGRES_URL ?? defaultPostgresAdminUrl;
      const database = `shipshape_stack_${randomBytes(5).toString('hex')}`;
      await admin(adminUrl, (c) => c.query(`CREATE DATABASE "${database}"`));
      ctx.state.components.postgres = { adminUrl, database } satisfies Record;
      ctx.save();
      const url = new URL(adminUrl);
      url.pathname = `/${database}`;
      ctx.state.databases.push({ role: 'primary', url: url.toString() });
      ctx.appEnv.DATABASE_URL = url.toString();
      ctx.log(`postgres: created database ${database}; migrating`);
      await run(process.execPath, [join(ctx.root, 'dist', 'cli', 'migrate.js')], {
        cwd: ctx.root,
        env: { ...process.env, ...ctx.appEnv },
        timeout: 120_000,
      });
      ctx.save();
    },
    async down(state: StackState, log) {
      const record = state.components.postgres as Record | undefined;
      if (record === undefined) return;
      await admin(record.adminUrl, (c) =>
        c.query(`DROP DATABASE IF EXISTS "${record.database}" WITH (FORCE)`),
      );
      log(`postgres: dropped database ${record.database}`);
    },
  };
}

/** The prototype's embedded database: a SQLite file in the state directory (the app migrates it). */
export function sqliteDatabase(): Component {
  return {
    name: 'sqlite',
    async up(ctx) {
      const path = join(ctx.state.stateDir, 'shipshape.db');
      ctx.appEnv.SQLITE_PATH = path;
      ctx.state.databases.push({ role: 'primary', url: `file:${path}` });
      ctx.save();
    },
    // The file goes with the state directory.
    async down() {},
  };
}
