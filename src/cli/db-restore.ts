import { BackupError, pitrRestore, restore } from '../ops/backup.js';
import { CliError, parseCliArgs } from './run.js';

/**
 * `npm run db:restore` (decisions 0072, 0120). A logical backup into a database you name, verified
 * table by table against its manifest, its tables created as shipshape_owner where the roles exist;
 * or, with --pitr, the pgBackRest repository restored up to a point in time into a stopped
 * cluster's data directory (a non-empty one only with --force) or into an empty one beside it.
 */
const text = { type: 'string' } as const;
const toggle = { type: 'boolean' } as const;
const args = parseCliArgs({
  usage: [
    'usage: npm run db:restore -- --from MANIFEST --into URL|FILE --identity FILE [--force]',
    '       npm run db:restore -- --pitr --target-time "YYYY-MM-DD HH:MM:SS+00" [--stanza shipshape]',
    '                             [--config FILE] [--pg-path DIR] [--force]',
  ].join('\n'),
  help: [
    '  --from MANIFEST     the .manifest.json written by db:backup (the .dump.age beside it)',
    '  --into URL|FILE     postgres://… (an existing, empty database) or a SQLite file path; where the',
    '                      roles exist, the tables are created as shipshape_owner (connect as it or a',
    '                      superuser; run deploy/postgres/database.sql in the database first)',
    '  --identity FILE     the age identity (secret key) matching a recipient of the backup',
    '  --force             replace what the target holds (--pitr: overwrite a non-empty data directory)',
    '  --pitr              pgBackRest: restore the cluster to --target-time (the cluster must be stopped);',
    '                      it starts as a primary once recovery reaches the target',
    '  --stanza NAME       pgBackRest stanza (default shipshape)',
    '  --config FILE       pgBackRest config (default /etc/pgbackrest/pgbackrest.conf)',
    '  --pg-path DIR       data directory to restore into (default: the stanza’s pg1-path); another,',
    '                      empty one restores a copy to check, with archiving off',
  ].join('\n'),
  options: Object.fromEntries([
    ...['from', 'into', 'identity', 'target-time', 'stanza', 'config', 'pg-path'].map((flag) => [flag, text]),
    ...['force', 'pitr'].map((flag) => [flag, toggle]),
  ]),
});

try {
  if (args.pitr === true) {
    const targetTime = args['target-time'] as string | undefined;
    if (targetTime === undefined) throw new CliError('--pitr needs --target-time (with a time zone offset)');
    const pgPath = args['pg-path'] as string | undefined;
    const result = await pitrRestore({
      stanza: (args.stanza as string | undefined) ?? 'shipshape',
      config: (args.config as string | undefined) ?? '/etc/pgbackrest/pgbackrest.conf',
      targetTime,
      ...(pgPath === undefined ? {} : { pgPath }),
      force: args.force === true,
    });
    console.log(
      `restored ${result.pgPath}${result.overwritten ? ' in place' : ''} to ${targetTime} in ${result.seconds.toFixed(1)} s; start PostgreSQL: recovery replays WAL up to the target, then promotes`,
    );
    if (result.scratch)
      console.log(
        'not the stanza’s data directory: archiving is off in the restored cluster (it must not push WAL into the repository); start it on a port of its own',
      );
  } else {
    const from = args.from as string | undefined;
    const into = args.into as string | undefined;
    const identity = args.identity as string | undefined;
    if (from === undefined || into === undefined || identity === undefined)
      throw new CliError('--from, --into and --identity are all needed (or --pitr)');
    const result = await restore({
      manifest: from,
      into,
      identityFile: identity,
      force: args.force === true,
    });
    console.log(
      `restored ${result.tables} tables, ${result.rows} rows in ${result.seconds.toFixed(2)} s; every table matches the manifest`,
    );
    if (result.owner !== undefined) console.log(`the restored tables belong to ${result.owner}`);
    if (result.note !== undefined) console.log(`note: ${result.note}`);
  }
} catch (err) {
  if (err instanceof CliError || err instanceof BackupError) console.error(err.message);
  else console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
  process.exit(1);
}
