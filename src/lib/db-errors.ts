/**
 * Driver errors normalised once, for both engines, so services never parse driver messages.
 *
 * PostgreSQL (pg) errors carry a SQLSTATE `code` and, for constraint errors, the constraint name.
 * SQLite (better-sqlite3) errors carry codes like SQLITE_CONSTRAINT_UNIQUE and name the index or
 * columns only in the message.
 */

export type DbErrorKind =
  | 'unique_violation'
  | 'foreign_key_violation'
  | 'check_violation'
  /** The database cannot serve right now (down, overloaded, timed out): answer 503, retry later. */
  | 'unavailable'
  | 'other';

interface DriverError {
  code?: unknown;
  constraint?: unknown;
  message?: unknown;
}

function asDriverError(err: unknown): DriverError {
  return typeof err === 'object' && err !== null ? (err as DriverError) : {};
}

const pgUnavailable = new Set([
  '57014', // query_canceled: statement_timeout
  '53300', // too_many_connections
  '57P01', // admin_shutdown
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now
  '40001', // serialization_failure
  '40P01', // deadlock_detected
  '55P03', // lock_not_available
]);

const networkCodes = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EHOSTUNREACH',
]);

export function classifyDbError(err: unknown): DbErrorKind {
  const { code, message } = asDriverError(err);
  if (typeof code === 'string') {
    if (code === '23505' || code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY') {
      return 'unique_violation';
    }
    if (code === '23503' || code === 'SQLITE_CONSTRAINT_FOREIGNKEY') return 'foreign_key_violation';
    // SQLite reports ON DELETE RESTRICT through its internal trigger mechanism.
    if (code === 'SQLITE_CONSTRAINT_TRIGGER' && String(message).includes('FOREIGN KEY')) {
      return 'foreign_key_violation';
    }
    if (code === '23514' || code === 'SQLITE_CONSTRAINT_CHECK') return 'check_violation';
    if (pgUnavailable.has(code) || code.startsWith('08')) return 'unavailable';
    if (code === 'SQLITE_BUSY' || code.startsWith('SQLITE_BUSY_') || code === 'SQLITE_LOCKED')
      return 'unavailable';
    if (networkCodes.has(code)) return 'unavailable';
  }
  if (typeof message === 'string') {
    // pg's pool and client raise these without a code.
    if (
      message.includes('timeout exceeded when trying to connect') ||
      message.includes('Connection terminated') ||
      message.includes('Client has encountered a connection error')
    ) {
      return 'unavailable';
    }
  }
  return 'other';
}

/**
 * For a unique violation, the constraint or index it hit (PostgreSQL: its name; SQLite: the index
 * name or the `table.column` list from the message). Callers test it with `includes('email')`.
 */
export function violatedConstraint(err: unknown): string | undefined {
  const { constraint, message } = asDriverError(err);
  if (typeof constraint === 'string') return constraint;
  if (typeof message === 'string') {
    const match = /constraint failed: (?:index '([^']+)'|(.+))$/.exec(message);
    return match?.[1] ?? match?.[2];
  }
  return undefined;
}
