import { loadConfig } from '../config.js';
import { BackupError, backup } from '../ops/backup.js';
import { CliError, forMigrations, parseCliArgs } from './run.js';

/**
 * `npm run db:backup` (decision 0072): the configured database as an age-encrypted logical dump and a
 * checksum manifest; with --textfile, the success time for node-exporter's textfile collector (the
 * BackupTooOld alert reads it). The database is the migrations' connection when one is set
 * (DATABASE_MIGRATION_URL, decision 0111: the owner, straight to PostgreSQL), else DATABASE_URL,
 * else SQLITE_PATH. A server's DATABASE_URL is the app role through PgBouncer in transaction
 * mode, where pg_dump's session settings (`statement_timeout = 0` among them) may land on another
 * server connection than its dump, and the role's 10 s statement timeout would then end a long one.
 */
const args = parseCliArgs({
  usage:
    'usage: npm run db:backup -- (--recipient age1… | --recipients-file FILE) [--out DIR] [--textfile FILE]',
  help: [
    '  --recipient KEY        an age public key (repeatable; the backup host needs no secret)',
    '  --recipients-file FILE age recipients, one a line',
    '  --out DIR              where the .dump.age and .manifest.json go (default: backups)',
    '  --textfile FILE        write backup_last_success_timestamp_seconds there on success',
    '                         (e.g. /var/lib/prometheus/node-exporter/shipshape_backup.prom)',
  ].join('\n'),
  options: {
    recipient: { type: 'string', multiple: true },
    'recipients-file': { type: 'string' },
    out: { type: 'string' },
    textfile: { type: 'string' },
  },
});

try {
  const config = forMigrations(loadConfig());
  const source = config.database.url ?? config.database.sqlitePath;
  const recipients = (args.recipient ?? []) as string[];
  const recipientsFile = args['recipients-file'] as string | undefined;
  if (recipients.length === 0 && recipientsFile === undefined)
    throw new CliError('no age recipient: pass --recipient age1… or --recipients-file FILE');
  const textfile = args.textfile as string | undefined;
  const { manifest, path } = await backup({
    source,
    outDir: (args.out as string | undefined) ?? 'backups',
    recipients,
    ...(recipientsFile === undefined ? {} : { recipientsFile }),
    ...(textfile === undefined ? {} : { textfile }),
  });
  const rows = Object.values(manifest.tables).reduce((n, t) => n + t.rows, 0);
  console.log(
    `backup of ${manifest.source}: ${Object.keys(manifest.tables).length} tables, ${rows} rows, ${manifest.bytes} bytes encrypted`,
  );
  console.log(`manifest: ${path}`);
} catch (err) {
  if (err instanceof CliError || err instanceof BackupError) console.error(err.message);
  else console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
  process.exit(1);
}
