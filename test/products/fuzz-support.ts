import fc from 'fast-check';
import { encodeCursor } from '../../src/lib/pagination.js';
import { nastyValue } from '../support/fuzz.js';

/** Header values Node accepts (no CR, LF or NUL, nothing beyond Latin-1). */
export const headerText = fc.string({ unit: 'binary' }).map((s) => s.replace(/[^\t\x20-\x7e\x80-\xff]/g, ''));

/** Query values: nasty ones, plausible ones, and cursors that decode to the wrong things. */
export const queryValue: fc.Arbitrary<string> = fc.oneof(
  nastyValue.map((v) => (typeof v === 'string' ? v : (JSON.stringify(v) ?? ''))),
  fc.constantFrom('1', '20', '100', '101', '0', '-5', 'true', 'false', '19.99', '0.001', '1e2', ''),
  fc
    .array(fc.oneof(fc.string(), fc.uuid(), fc.integer(), fc.constant(null)), { maxLength: 3 })
    .map((parts) => encodeCursor(parts as string[])),
);

export function queryString(keys: readonly string[]): fc.Arbitrary<string> {
  return fc
    .dictionary(fc.constantFrom(...keys, 'extra'), queryValue, { maxKeys: keys.length + 1 })
    .map((q) => new URLSearchParams(Object.entries(q)).toString());
}
