import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { beginStatement, settingMs } from '../../src/infra/database.js';

/**
 * Nothing session-scoped anywhere in the service's code (decision 0070): behind PgBouncer in
 * transaction mode a session's state stays on a server connection that the next transaction of
 * another client gets (test/db/pgbouncer.test.ts shows the leak). Transaction-scoped forms are
 * fine: SET LOCAL, set_config(…, true), pg_advisory_xact_lock, ON COMMIT DROP.
 */

const root = fileURLToPath(new URL('../../', import.meta.url));

interface Rule {
  readonly name: string;
  readonly pattern: RegExp;
}

export const rules: readonly Rule[] = [
  // A statement that starts with SET (after a quote, a backtick or a semicolon) and is not SET LOCAL.
  {
    name: 'session SET',
    pattern: /(?:[`'";]|\bsql\.raw\(\s*['"`])\s*set\s+(?!local\b)(?:session\s+)?\w+\s*(?:=|to\b)/gi,
  },
  // RESET and one setting name, then the end of the statement (not "Reset your password").
  { name: 'RESET', pattern: /[`'";]\s*reset\s+(?:all|[\w.]+)\s*(?=[;`'"]|$)/gim },
  { name: 'set_config(…, false)', pattern: /set_config\s*\([^)]*,\s*false\s*\)/gi },
  { name: 'LISTEN/UNLISTEN', pattern: /[`'";]\s*(?:un)?listen\s+[\w"*]/gi },
  { name: 'session advisory lock', pattern: /pg_(?:try_)?advisory_(?:un)?lock(?:_shared|_all)?\s*\(/gi },
  { name: 'PREPARE/EXECUTE/DEALLOCATE', pattern: /[`'";]\s*(?:prepare|deallocate|execute)\s+\w+/gi },
  { name: 'DISCARD', pattern: /[`'";]\s*discard\s+\w+/gi },
  { name: 'WITH HOLD cursor', pattern: /\bwith\s+hold\b/gi },
  {
    name: 'temporary table (lives for the session)',
    pattern: /\bcreate\s+(?:local\s+|global\s+)?temp(?:orary)?\s+table\b(?![^;`]*on\s+commit\s+drop)/gi,
  },
  { name: 'named prepared statement', pattern: /\.query\(\s*\{[^}]*\bname\s*:/gs },
  {
    name: 'timeout as a startup parameter',
    pattern: /\b(?:statement_timeout|lock_timeout|idle_in_transaction_session_timeout)\s*:/g,
  },
  { name: 'startup options', pattern: /\boptions\s*:\s*['"`]\s*-c\b/g },
];

export function violations(text: string): string[] {
  const found: string[] = [];
  for (const rule of rules) {
    for (const match of text.matchAll(rule.pattern)) found.push(`${rule.name}: ${match[0].trim()}`);
  }
  return found;
}

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return sources(path);
    return /\.(ts|mts|cts|js|mjs|cjs)$/.test(entry.name) ? [path] : [];
  });
}

/**
 * Files that hold a session on purpose and therefore must connect to PostgreSQL itself (port
 * 5432), never through PgBouncer — each with the reason. Nothing the service runs is here.
 */
const directOnly: Readonly<Record<string, string>> = {
  'src/db/production-migrator.ts':
    'npm run db:migrate:production (decision 0068): a session advisory lock held across one transaction per migration, and lock/statement timeouts as startup options; an operator command run as shipshape_owner against PostgreSQL directly',
};

describe('session-scoped SQL', () => {
  test('none in the service (src/), the stack or the scripts', () => {
    const files = [...sources(join(root, 'src')), ...sources(join(root, 'stack'))].filter(
      (file) => !(relative(root, file) in directOnly),
    );
    for (const file of Object.keys(directOnly))
      assert.ok(
        violations(readFileSync(join(root, file), 'utf8')).length > 0,
        `${file} no longer needs its exemption`,
      );
    assert.ok(files.length > 50, 'the scan found the sources');
    const found = files.flatMap((file) =>
      violations(readFileSync(file, 'utf8')).map((v) => `${relative(root, file)}: ${v}`),
    );
    assert.deepEqual(found, []);
  });

  test('the scan catches each session-scoped form (the guide’s and pg’s defaults among them)', () => {
    const bad = [
      "await client.query('SET statement_timeout = 5000')",
      'sql`set search_path to shop`',
      "sql.raw('set session timezone = utc')",
      "await client.query('RESET ALL')",
      "sql`select set_config('statement_timeout', '5s', false)`",
      "client.query('LISTEN orders')",
      'sql`select pg_advisory_lock(42)`',
      'sql`select pg_try_advisory_lock(42)`',
      "client.query('PREPARE get_user AS select 1')",
      "client.query('DEALLOCATE ALL')",
      "client.query('DISCARD ALL')",
      'sql`declare c cursor with hold for select 1`',
      'sql`create temp table scratch (id int)`',
      "client.query({ name: 'get-user', text: 'select 1' })",
      'new pg.Pool({ connectionString, statement_timeout: 10000 })',
      'new pg.Pool({ idle_in_transaction_session_timeout: 10000 })',
      "new pg.Client({ options: '-c statement_timeout=5000' })",
    ];
    for (const snippet of bad) assert.ok(violations(snippet).length > 0, `not caught: ${snippet}`);
  });

  test('transaction-scoped forms and ordinary SQL pass', () => {
    const good = [
      'sql`update products set stock = stock - 1 where id = $1`',
      "db.updateTable('orders').set({ status: 'paid' })",
      "client.query('UPDATE t SET x = 1')",
      "sql`select set_config('lock_timeout', '1s', true)`",
      'sql.raw(`select pg_advisory_xact_lock(1)`)',
      'begin; set local statement_timeout = 100',
      'sql`create temp table scratch (id int) on commit drop`',
      'server.listen({ port })',
      "const options = { name: 'x' }",
    ];
    for (const snippet of good) assert.deepEqual(violations(snippet), [], snippet);
  });

  test('every transaction the service opens sets its timeouts locally, in the BEGIN round trip', () => {
    const timeouts = { statementTimeoutMs: 300, idleInTransactionTimeoutMs: 10_000 };
    assert.equal(
      beginStatement({}, timeouts),
      'begin; set local statement_timeout = 300; set local idle_in_transaction_session_timeout = 10000',
    );
    assert.match(
      beginStatement({ isolationLevel: 'serializable', accessMode: 'read only' }, timeouts),
      /^start transaction isolation level serializable read only; set local statement_timeout = 300;/,
    );
    assert.deepEqual(violations(beginStatement({}, timeouts)), []);
  });

  test('PostgreSQL’s timeout settings read as milliseconds', () => {
    assert.equal(settingMs('10s', 'ms'), 10_000);
    assert.equal(settingMs('1234ms', 'ms'), 1234);
    assert.equal(settingMs('1min', 'ms'), 60_000);
    assert.equal(settingMs('0', 'ms'), 0);
    assert.equal(settingMs('soon', 'ms'), undefined);
  });
});
