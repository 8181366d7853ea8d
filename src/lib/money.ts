/**
 * Money is handled as integer cents, never as floating point. On the wire and in PostgreSQL it is a
 * decimal string with two places ("19.99"); SQLite hands numeric columns back as numbers, which
 * are exact at two decimals for any amount below 2^53 cents.
 */

export type Cents = number;

const decimal = /^(-?)(\d{1,13})(?:\.(\d{1,2}))?$/;

/** Parses "19.99", "19.9", "19" or a database number into cents; throws on anything else. */
export function toCents(value: string | number): Cents {
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new RangeError(`not a finite amount: ${value}`);
    const cents = Math.round(value * 100);
    if (!Number.isSafeInteger(cents)) throw new RangeError(`amount out of range: ${value}`);
    return cents;
  }
  const match = decimal.exec(value.trim());
  if (match === null) throw new RangeError(`not a decimal amount with at most two places: "${value}"`);
  const [, sign, whole = '0', fraction = ''] = match;
  const cents = Number(whole) * 100 + Number(fraction.padEnd(2, '0'));
  return sign === '-' ? -cents : cents;
}

/** Formats cents as a decimal string with exactly two places: 1999 → "19.99", -5 → "-0.05". */
export function formatCents(cents: Cents): string {
  if (!Number.isSafeInteger(cents)) throw new RangeError(`not a whole number of cents: ${cents}`);
  const sign = cents < 0 ? '-' : '';
  const abs = Math.abs(cents);
  return `${sign}${Math.trunc(abs / 100)}.${String(abs % 100).padStart(2, '0')}`;
}
