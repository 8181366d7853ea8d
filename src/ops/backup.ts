import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  createReadStream,
  createWriteStream,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type SqliteDatabase from 'better-sqlite3';
import pg from 'pg';
import { type Ini, parseIni } from '../lib/ini.js';

/**
 * Logical backups (decision 0072): `npm run db:backup` writes `<name>.dump.age` — `pg_dump -Fc` (or
 * SQLite's online backup) encrypted with `age` to public-key recipients, so the backup host holds
 * no secret — and `<name>.manifest.json` with the checksums of both the ciphertext and the
 * plaintext, and per-table row counts and content checksums taken in the same snapshot as the dump.
 * `npm run db:restore` checks the ciphertext, decrypts, checks the plaintext, restores, then
 * recomputes every table's checksum in the target and fails on any difference.
 */

/**
 * The role that owns the tables in production (deploy/postgres/roles.sql, decision 0071). A restore
 * creates every object as it (`pg_restore --role`), so the default privileges database.sql sets for
 * it grant the restored tables to the service's and the reporting roles; objects created by anyone
 * else (postgres) would be invisible to them.
 */
export const ownerRole = 'shipshape_owner';

export const manifestFormat = 'shipshape-backup/1';

export interface TableDigest {
  readonly rows: number;
  /** PostgreSQL: md5 of the rows' text, sorted (C collation); SQLite: sha256 of the rows' JSON, sorted. */
  readonly checksum: string;
}

export interface Manifest {
  readonly format: typeof manifestFormat;
  readonly engine: 'postgres' | 'sqlite';
  readonly createdAt: string;
  /** Where it came from, without credentials. */
  readonly source: string;
  /** The encrypted file, beside the manifest. */
  readonly file: string;
  readonly bytes: number;
  readonly sha256: string;
  readonly plaintextSha256: string;
  readonly tables: Readonly<Record<string, TableDigest>>;
}

export class BackupError extends Error {}

export interface BackupOptions {
  /** postgres://… or a SQLite file path. */
  readonly source: string;
  readonly outDir: string;
  /** age recipients (age1…, or ssh public keys) and/or a recipients file (one a line). */
  readonly recipients: readonly string[];
  readonly recipientsFile?: string;
  /** node-exporter textfile (…/backup.prom): the last success, for the BackupTooOld alert. */
  readonly textfile?: string;
  readonly now?: Date;
}

export interface RestoreOptions {
  readonly manifest: string;
  /** postgres://… (an existing database) or a SQLite file path. */
  readonly into: string;
  readonly identityFile: string;
  /** Replace what the target holds (PostgreSQL: pg_restore --clean; SQLite: the file). */
  readonly force?: boolean;
}

export interface RestoreResult {
  readonly tables: number;
  readonly rows: number;
  readonly seconds: number;
  /** PostgreSQL: the role the restored objects belong to (ownerRole, or the connecting one without it). */
  readonly owner?: string;
  /** Something the operator must know about the result (a restore without the production roles). */
  readonly note?: string;
}

const isPostgres = (target: string) => /^postgres(ql)?:\/\//.test(target);

/** host:port/database, never the password. */
export function describeTarget(target: string): string {
  if (!isPostgres(target)) return `sqlite ${target}`;
  const url = new URL(target);
  return `postgres ${url.hostname || 'localhost'}:${url.port || '5432'}${url.pathname}`;
}

/** libpq environment for a URL: the password travels in PGPASSWORD, never in argv (ps shows argv). */
function libpq(target: string): { url: string; env: NodeJS.ProcessEnv } {
  const url = new URL(target);
  const password = decodeURIComponent(url.password);
  url.password = '';
  return {
    url: url.toString(),
    env: { ...process.env, ...(password === '' ? {} : { PGPASSWORD: password }) },
  };
}

interface Run {
  readonly code: number | null;
  readonly stderr: string;
}

/** Waits for a process; its stderr (and stdout, when `withStdout`: pgBackRest reports there). */
function collect(child: ReturnType<typeof spawn>, withStdout = false): Promise<Run> {
  let stderr = '';
  for (const stream of withStdout ? [child.stderr, child.stdout] : [child.stderr])
    stream?.on('data', (chunk) => {
      stderr += chunk;
    });
  return new Promise((resolveRun, reject) => {
    child.once('error', reject);
    child.once('close', (code) => resolveRun({ code, stderr }));
  });
}

function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  return pipeline(createReadStream(path), hash).then(() => hash.digest('hex'));
}

function hashing(hash: ReturnType<typeof createHash>): Transform {
  return new Transform({
    transform(chunk, _encoding, callback) {
      hash.update(chunk);
      callback(null, chunk);
    },
  });
}

function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/** Every user table's row count and content checksum, in the client's current snapshot. */
async function postgresDigests(client: pg.Client): Promise<Record<string, TableDigest>> {
  const { rows: tables } = await client.query<{ schema: string; name: string }>(
    `SELECT schemaname AS schema, tablename AS name FROM pg_tables
      WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2`,
  );
  const digests: Record<string, TableDigest> = {};
  for (const { schema, name } of tables) {
    const table = `${quoteIdent(schema)}.${quoteIdent(name)}`;
    const { rows } = await client.query<{ rows: string; checksum: string }>(
      `SELECT count(*)::text AS rows,
              md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text COLLATE "C"), '')) AS checksum
         FROM ${table} t`,
    );
    digests[schema === 'public' ? name : `${schema}.${name}`] = {
      rows: Number(rows[0]?.rows ?? 0),
      checksum: rows[0]?.checksum ?? '',
    };
  }
  return digests;
}

function openSqlite(path: string, readonly: boolean): SqliteDatabase.Database {
  const Sqlite = createRequire(import.meta.url)('better-sqlite3') as typeof SqliteDatabase;
  return new Sqlite(path, { readonly, fileMustExist: true });
}

function sqliteDigests(db: SqliteDatabase.Database): Record<string, TableDigest> {
  const tables = db
    .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
    .pluck()
    .all() as string[];
  const digests: Record<string, TableDigest> = {};
  for (const name of tables) {
    const rows = (db.prepare(`SELECT * FROM ${quoteIdent(name)}`).all() as unknown[]).map((r) =>
      JSON.stringify(r, (_key, value) => (Buffer.isBuffer(value) ? value.toString('base64') : value)),
    );
    rows.sort();
    digests[name] = {
      rows: rows.length,
      checksum: createHash('sha256').update(rows.join('\n')).digest('hex'),
    };
  }
  return digests;
}

/** Encrypts a stream to the recipients with age, into `out`; returns the plaintext's sha256. */
async function encrypt(
  input: NodeJS.ReadableStream,
  out: string,
  options: Pick<BackupOptions, 'recipients' | 'recipientsFile'>,
): Promise<string> {
  const args = ['--encrypt', '--output', out];
  for (const recipient of options.recipients) args.push('--recipient', recipient);
  if (options.recipientsFile !== undefined) args.push('--recipients-file', options.recipientsFile);
  if (options.recipients.length === 0 && options.recipientsFile === undefined)
    throw new BackupError('no age recipient: pass --recipient age1… or --recipients-file FILE');
  const age = spawn('age', args, { stdio: ['pipe', 'ignore', 'pipe'] });
  const done = collect(age);
  const hash = createHash('sha256');
  await pipeline(input, hashing(hash), age.stdin as NodeJS.WritableStream);
  const { code, stderr } = await done;
  if (code !== 0) throw new BackupError(`age could not encrypt: ${stderr.trim()}`);
  return hash.digest('hex');
}

/** The Prometheus textfile, replaced atomically (node-exporter never reads half a file). */
export function writeBackupTextfile(path: string, manifest: Manifest, seconds: number): void {
  const at = Date.parse(manifest.createdAt) / 1000;
  const text = [
    '# HELP backup_last_success_timestamp_seconds When the last successful database backup finished (Unix time).',
    '# TYPE backup_last_success_timestamp_seconds gauge',
    `backup_last_success_timestamp_seconds{engine="${manifest.engine}"} ${at}`,
    '# HELP backup_last_size_bytes Size of the last successful backup, encrypted.',
    '# TYPE backup_last_size_bytes gauge',
    `backup_last_size_bytes{engine="${manifest.engine}"} ${manifest.bytes}`,
    '# HELP backup_last_duration_seconds How long the last successful backup took.',
    '# TYPE backup_last_duration_seconds gauge',
    `backup_last_duration_seconds{engine="${manifest.engine}"} ${seconds.toFixed(3)}`,
    '',
  ].join('\n');
  mkdirSync(dirname(path), { recursive: true });
  const temporary = `${path}.${process.pid}.tmp`;
  writeFileSync(temporary, text, { mode: 0o644 });
  renameSync(temporary, path);
}

export async function backup(options: BackupOptions): Promise<{ manifest: Manifest; path: string }> {
  const started = performance.now();
  const now = options.now ?? new Date();
  mkdirSync(options.outDir, { recursive: true, mode: 0o700 });
  const stamp = now
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z');
  const engine = isPostgres(options.source) ? 'postgres' : 'sqlite';
  const name = `shipshape-${engine}-${stamp}`;
  const file = join(options.outDir, `${name}.dump.age`);
  const partial = `${file}.partial`;
  let tables: Record<string, TableDigest>;
  let plaintextSha256: string;
  try {
    if (engine === 'postgres') {
      // One snapshot for the dump and the checksums: pg_dump --snapshot joins this transaction's.
      const { url, env } = libpq(options.source);
      const client = new pg.Client({ connectionString: options.source });
      await client.connect();
      try {
        await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
        const { rows } = await client.query<{ id: string }>('SELECT pg_export_snapshot() AS id');
        const dump = spawn('pg_dump', ['--format=custom', `--snapshot=${rows[0]?.id}`, '--dbname', url], {
          env,
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        const dumped = collect(dump);
        const digests = postgresDigests(client);
        const encrypted = encrypt(dump.stdout as NodeJS.ReadableStream, partial, options);
        const [run, hash, digest] = await Promise.all([dumped, encrypted, digests]);
        if (run.code !== 0) throw new BackupError(`pg_dump failed: ${run.stderr.trim()}`);
        plaintextSha256 = hash;
        tables = digest;
        await client.query('COMMIT');
      } finally {
        await client.end().catch(() => {});
      }
    } else {
      if (!existsSync(options.source)) throw new BackupError(`no SQLite database at ${options.source}`);
      const scratch = mkdtempSync(join(tmpdir(), 'shipshape-backup-'));
      try {
        const copy = join(scratch, 'copy.db');
        const db = openSqlite(options.source, true);
        try {
          await db.backup(copy);
        } finally {
          db.close();
        }
        const snapshot = openSqlite(copy, true);
        try {
          tables = sqliteDigests(snapshot);
        } finally {
          snapshot.close();
        }
        plaintextSha256 = await encrypt(createReadStream(copy), partial, options);
      } finally {
        rmSync(scratch, { recursive: true, force: true });
      }
    }
    renameSync(partial, file);
  } catch (err) {
    rmSync(partial, { force: true });
    throw err;
  }
  const manifest: Manifest = {
    format: manifestFormat,
    engine,
    createdAt: new Date().toISOString(),
    source: describeTarget(options.source),
    file: basename(file),
    bytes: statSync(file).size,
    sha256: await sha256File(file),
    plaintextSha256,
    tables,
  };
  const path = join(options.outDir, `${name}.manifest.json`);
  writeFileSync(path, `${JSON.stringify(manifest, null, 2)}\n`, { mode: 0o600 });
  if (options.textfile !== undefined)
    writeBackupTextfile(options.textfile, manifest, (performance.now() - started) / 1000);
  return { manifest, path };
}

export function readManifest(path: string): Manifest {
  let manifest: Manifest;
  try {
    manifest = JSON.parse(readFileSync(path, 'utf8')) as Manifest;
  } catch (err) {
    throw new BackupError(`cannot read the manifest ${path}: ${(err as Error).message}`);
  }
  if (manifest.format !== manifestFormat)
    throw new BackupError(`${path} is not a ${manifestFormat} manifest`);
  return manifest;
}

/** What differs between the backup's tables and the restored ones (empty: identical). */
export function compareDigests(
  expected: Readonly<Record<string, TableDigest>>,
  actual: Readonly<Record<string, TableDigest>>,
): string[] {
  const problems: string[] = [];
  for (const [table, want] of Object.entries(expected)) {
    const got = actual[table];
    if (got === undefined) problems.push(`${table}: missing`);
    else if (got.rows !== want.rows) problems.push(`${table}: ${got.rows} rows, expected ${want.rows}`);
    else if (got.checksum !== want.checksum) problems.push(`${table}: content differs`);
  }
  for (const table of Object.keys(actual))
    if (!(table in expected)) problems.push(`${table}: not in the backup`);
  return problems;
}

async function decrypt(
  manifest: Manifest,
  encrypted: string,
  identityFile: string,
  out: string,
): Promise<void> {
  if (!existsSync(identityFile)) throw new BackupError(`no identity file at ${identityFile}`);
  const age = spawn('age', ['--decrypt', '--identity', identityFile, '--output', out, encrypted], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const { code, stderr } = await collect(age);
  if (code !== 0) {
    rmSync(out, { force: true });
    if (/no identity matched/i.test(stderr))
      throw new BackupError(
        `wrong key: the identity in ${identityFile} is not one this backup was encrypted to (${manifest.file})`,
      );
    throw new BackupError(`age could not decrypt ${manifest.file}: ${stderr.trim()}`);
  }
}

/**
 * Whom a PostgreSQL restore creates its objects as. Where the production roles exist, always
 * ownerRole — whichever role --into connects as (a superuser, or the owner itself) — and only into a
 * database prepared by database.sql (its default privileges are what grant the restored tables to
 * the others): both are checked before anything is restored. Without the roles (a scratch database
 * on a developer's or a check server), the connecting role, with a note saying the result has no
 * grants.
 */
async function restoreOwner(
  client: pg.Client,
  target: string,
): Promise<{ role?: string; currentUser: string; note?: string }> {
  const { rows } = await client.query<{ me: string; exists: boolean }>(
    'SELECT current_user AS me, EXISTS (SELECT FROM pg_roles WHERE rolname = $1) AS exists',
    [ownerRole],
  );
  const me = rows[0]?.me ?? '';
  if (rows[0]?.exists !== true)
    return {
      currentUser: me,
      note: `no role ${ownerRole} in ${target}: the restored tables belong to ${me} and are granted to nobody — fine to check a backup, not for the service (create the roles with deploy/postgres/roles.sql and run database.sql in the database first)`,
    };
  const { rows: checks } = await client.query<{ member: boolean; defaults: boolean }>(
    `SELECT pg_has_role(current_user, $1, 'MEMBER') AS member,
            EXISTS (SELECT FROM pg_default_acl d JOIN pg_namespace n ON n.oid = d.defaclnamespace
                     WHERE d.defaclrole = to_regrole($1) AND n.nspname = 'public' AND d.defaclobjtype = 'r') AS defaults`,
    [ownerRole],
  );
  if (checks[0]?.member !== true)
    throw new BackupError(
      `${me} cannot act as ${ownerRole} in ${target}: connect --into as ${ownerRole} or a superuser, so the restored tables belong to ${ownerRole}`,
    );
  if (checks[0]?.defaults !== true)
    throw new BackupError(
      `${target} has the role ${ownerRole} but not its default privileges: run deploy/postgres/database.sql in it (as a superuser) before restoring, or the restored tables would be granted to nobody`,
    );
  return { role: ownerRole, currentUser: me };
}

export async function restore(options: RestoreOptions): Promise<RestoreResult> {
  const started = performance.now();
  const manifest = readManifest(options.manifest);
  const encrypted = resolve(dirname(options.manifest), manifest.file);
  if (!existsSync(encrypted)) throw new BackupError(`the backup file ${encrypted} is missing`);
  if ((await sha256File(encrypted)) !== manifest.sha256)
    throw new BackupError(
      `${manifest.file} does not match its manifest's sha256: damaged or altered, not restored`,
    );
  const targetEngine = isPostgres(options.into) ? 'postgres' : 'sqlite';
  if (targetEngine !== manifest.engine)
    throw new BackupError(
      `a ${manifest.engine} backup cannot be restored into ${describeTarget(options.into)}`,
    );
  const scratch = mkdtempSync(join(tmpdir(), 'shipshape-restore-'));
  chmodSync(scratch, 0o700);
  try {
    const plain = join(scratch, 'dump');
    let restored: Record<string, TableDigest>;
    let result: Pick<RestoreResult, 'owner' | 'note'> = {};
    if (manifest.engine === 'postgres') {
      const client = new pg.Client({ connectionString: options.into });
      await client.connect();
      try {
        const { rows } = await client.query<{ n: string }>(
          `SELECT count(*)::text AS n FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')`,
        );
        const existing = Number(rows[0]?.n ?? 0);
        if (existing > 0 && options.force !== true)
          throw new BackupError(
            `${describeTarget(options.into)} is not empty (${existing} tables): restore into an empty database, or pass --force to replace its contents`,
          );
        const owner = await restoreOwner(client, describeTarget(options.into));
        await decrypt(manifest, encrypted, options.identityFile, plain);
        if ((await sha256File(plain)) !== manifest.plaintextSha256)
          throw new BackupError('the decrypted dump does not match the manifest: not restored');
        const { url, env } = libpq(options.into);
        // The backup's owners and grants are the source's (maybe a database without the roles):
        // none are restored; the objects are created as `owner` and get the target's default
        // privileges (database.sql), or none at all in a database without the roles.
        const args = [
          '--exit-on-error',
          '--single-transaction',
          '--no-owner',
          '--no-privileges',
          ...(owner.role === undefined ? [] : [`--role=${owner.role}`]),
          '--dbname',
          url,
        ];
        if (options.force === true && existing > 0) args.push('--clean', '--if-exists');
        const run = await collect(
          spawn('pg_restore', [...args, plain], { env, stdio: ['ignore', 'ignore', 'pipe'] }),
        );
        if (run.code !== 0) throw new BackupError(`pg_restore failed: ${run.stderr.trim()}`);
        await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
        restored = await postgresDigests(client);
        await client.query('COMMIT');
        result = {
          owner: owner.role ?? owner.currentUser,
          ...(owner.note === undefined ? {} : { note: owner.note }),
        };
      } finally {
        await client.end().catch(() => {});
      }
    } else {
      if (existsSync(options.into) && statSync(options.into).size > 0 && options.force !== true)
        throw new BackupError(`${options.into} exists: restore to a new path, or pass --force to replace it`);
      await decrypt(manifest, encrypted, options.identityFile, plain);
      if ((await sha256File(plain)) !== manifest.plaintextSha256)
        throw new BackupError('the decrypted database does not match the manifest: not restored');
      const db = openSqlite(plain, true);
      try {
        restored = sqliteDigests(db);
      } finally {
        db.close();
      }
      const problems = compareDigests(manifest.tables, restored);
      if (problems.length > 0) throw new BackupError(`the backup's tables differ: ${problems.join('; ')}`);
      mkdirSync(dirname(resolve(options.into)), { recursive: true });
      // Copy then rename: the target is replaced whole or not at all.
      const staged = `${options.into}.restoring`;
      await pipeline(createReadStream(plain), createWriteStream(staged, { mode: 0o600 }));
      for (const suffix of ['-wal', '-shm']) rmSync(`${options.into}${suffix}`, { force: true });
      renameSync(staged, options.into);
    }
    const problems = compareDigests(manifest.tables, restored);
    if (problems.length > 0)
      throw new BackupError(`restored, but the tables differ from the backup: ${problems.join('; ')}`);
    const rows = Object.values(restored).reduce((n, t) => n + t.rows, 0);
    return {
      tables: Object.keys(restored).length,
      rows,
      seconds: (performance.now() - started) / 1000,
      ...result,
    };
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

export interface PitrOptions {
  readonly stanza: string;
  /** pgBackRest's configuration (deploy/pgbackrest/pgbackrest.conf, installed as /etc/pgbackrest/pgbackrest.conf). */
  readonly config: string;
  /** As PostgreSQL reckons it, with the zone offset: `2026-12-02 14:05:00.123+00`. */
  readonly targetTime: string;
  /** The data directory to restore into, when not the stanza's pg1-path (an empty one: a check cluster). */
  readonly pgPath?: string;
  /** Overwrite a non-empty data directory in place (pgBackRest --delta). */
  readonly force?: boolean;
}

export interface PitrResult {
  readonly seconds: number;
  /** The data directory restored into. */
  readonly pgPath: string;
  /** It held files, rewritten in place (--force). */
  readonly overwritten: boolean;
  /** Not the stanza's own data directory: the restored cluster's archiving is off. */
  readonly scratch: boolean;
}

/**
 * The stanza's pg1-path as pgBackRest would read it: PGBACKREST_PG1_PATH, else the configuration
 * file and the include directory (`[stanza:restore]`, `[stanza]`, `[global:restore]`, `[global]`,
 * in that order of precedence). Undefined when none names it.
 */
function stanzaPgPath(config: string, includeDir: string, stanza: string): string | undefined {
  const fromEnv = process.env.PGBACKREST_PG1_PATH;
  if (fromEnv !== undefined && fromEnv !== '') return fromEnv;
  const files = [config];
  if (existsSync(includeDir))
    for (const name of readdirSync(includeDir).sort())
      if (name.endsWith('.conf')) files.push(join(includeDir, name));
  // Later files override earlier ones, as in pgBackRest.
  const found = new Map<string, string>();
  for (const file of files) {
    let ini: Ini;
    try {
      ini = parseIni(readFileSync(file, 'utf8'), file);
    } catch (err) {
      throw new BackupError(`cannot read the pgBackRest configuration ${file}: ${(err as Error).message}`);
    }
    for (const [section, entries] of Object.entries(ini)) {
      const value = entries['pg1-path'];
      if (value !== undefined) found.set(section, value);
    }
  }
  for (const section of [`${stanza}:restore`, stanza, 'global:restore', 'global']) {
    const value = found.get(section);
    if (value !== undefined) return value;
  }
  return undefined;
}

/** What a data directory holds, for a refusal: the entries and, if it is one, PostgreSQL's version. */
function dataDirectoryEntries(path: string): string[] {
  try {
    return readdirSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new BackupError(
      `cannot look into ${path} (${(err as Error).message}): run db:restore --pitr as root or postgres`,
    );
  }
}

/**
 * Point-in-time recovery with pgBackRest: restores the newest backup taken before the target into
 * a stopped cluster's data directory and sets recovery to stop before the first transaction
 * committed after the target, then promote (the default would pause there). The proof that
 * recovery reached the target is PostgreSQL's log line "recovery stopping before commit of
 * transaction …" once the server starts.
 *
 * A data directory that holds anything is refused unless `force`, like a logical restore into a
 * non-empty database: pgBackRest's `--delta` (passed only then) rewrites every file that differs
 * from the backup and deletes the rest, so the cluster there is gone. Into another directory than
 * the stanza's pg1-path (`pgPath`, a scratch cluster to check a point before restoring the real
 * one), archiving is turned off in the restored cluster (`--archive-mode=off`): once promoted it
 * would push WAL of a new timeline into the same repository as the primary.
 */
export async function pitrRestore(options: PitrOptions): Promise<PitrResult> {
  const started = performance.now();
  if (!/[+-]\d\d(:?\d\d)?$|Z$/.test(options.targetTime.trim()))
    throw new BackupError(
      `--target-time needs a zone offset (e.g. "2026-12-02 14:05:00+00"): ${options.targetTime}`,
    );
  // The passphrase lives beside the file (conf.d/cipher.conf), not in it.
  const includeDir = join(dirname(options.config), 'conf.d');
  const stanzaPath = stanzaPgPath(options.config, includeDir, options.stanza);
  const pgPath = options.pgPath ?? stanzaPath;
  if (pgPath === undefined)
    throw new BackupError(
      `${options.config} names no pg1-path for the stanza ${options.stanza}: pass --pg-path DIR`,
    );
  const scratch = stanzaPath === undefined ? false : resolve(pgPath) !== resolve(stanzaPath);
  const entries = dataDirectoryEntries(pgPath);
  if (entries.length > 0 && options.force !== true) {
    const version = entries.includes('PG_VERSION')
      ? `the data directory of a PostgreSQL ${readFileSync(join(pgPath, 'PG_VERSION'), 'utf8').trim()} cluster`
      : 'files';
    throw new BackupError(
      `${pgPath} is not empty (${version}, ${entries.length} entries): the restore would overwrite it in place (pgBackRest --delta rewrites every file that differs from the backup and deletes the others). Pass --force to replace that cluster, or --pg-path with an empty directory to restore a copy beside it`,
    );
  }
  const overwritten = entries.length > 0;
  const args = [
    `--config=${options.config}`,
    `--config-include-path=${includeDir}`,
    `--stanza=${options.stanza}`,
    ...(overwritten ? ['--delta'] : []),
    '--type=time',
    `--target=${options.targetTime}`,
    '--target-action=promote',
    ...(scratch ? ['--archive-mode=off'] : []),
    ...(options.pgPath === undefined ? [] : [`--pg1-path=${options.pgPath}`]),
    'restore',
  ];
  // pgBackRest must write the data directory as its owner, the postgres user.
  const [file, argv] =
    process.getuid?.() === 0
      ? ['runuser', ['-u', 'postgres', '--', 'pgbackrest', ...args]]
      : ['pgbackrest', args];
  const run = await collect(spawn(file, argv, { stdio: ['ignore', 'pipe', 'pipe'] }), true);
  if (run.code !== 0) throw new BackupError(`pgbackrest restore failed: ${run.stderr.trim()}`);
  return { seconds: (performance.now() - started) / 1000, pgPath, overwritten, scratch };
}
