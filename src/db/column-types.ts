import type { ColumnType } from 'kysely';

/**
 * Column types shared by the table interfaces. Both engines hand timestamps back as ISO 8601 UTC
 * strings with millisecond precision (PostgreSQL through the pool's type parser, SQLite because
 * that is what is stored), so rows compare and serialise the same way on either.
 */

/** A timestamp set by the database on insert; the application may also provide it. */
export type CreatedAt = ColumnType<string, string | undefined, never>;
/** A timestamp kept current by a trigger on every update. */
export type UpdatedAt = ColumnType<string, string | undefined, string | undefined>;
export type Timestamp = ColumnType<string, string, string>;
export type NullableTimestamp = ColumnType<string | null, string | null | undefined, string | null>;

/** PostgreSQL numeric arrives as a string, SQLite's as a number; lib/money.ts reads both exactly. */
export type Money = ColumnType<string | number, string, string>;
