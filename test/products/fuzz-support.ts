import fc from 'fast-check';
import { encodeCursor } from '../../src/lib/pagination.js';
import { limitNumberText, nastyValue, queryOf, troublemakerString } from '../support/fuzz.js';

/** Query values: nasty ones, plausible ones, and cursors that decode to the wrong things. */
export const queryValue: fc.Arbitrary<string> = fc.oneof(
  nastyValue.map((v) => (typeof v === 'string' ? v : (JSON.stringify(v) ?? ''))),
  troublemakerString,
  limitNumberText,
  fc.constantFrom('1', '20', '100', '101', '0', '-5', 'true', 'false', '19.99', '0.001', '1e2', ''),
  fc
    .array(fc.oneof(fc.string(), troublemakerString, fc.uuid(), fc.integer(), fc.constant(null)), {
      maxLength: 3,
    })
    .map((parts) => encodeCursor(parts as string[])),
);

export function queryString(keys: readonly string[]): fc.Arbitrary<string> {
  return queryOf(keys, queryValue);
}
