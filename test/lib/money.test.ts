import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { formatCents, toCents } from '../../src/lib/money.js';

describe('money', () => {
  test('parses decimal strings exactly', () => {
    assert.equal(toCents('19.99'), 1999);
    assert.equal(toCents('19.9'), 1990);
    assert.equal(toCents('19'), 1900);
    assert.equal(toCents('0.01'), 1);
    assert.equal(toCents('-0.05'), -5);
    assert.equal(toCents('99999999.99'), 9_999_999_999);
  });

  test('parses database numbers exactly', () => {
    assert.equal(toCents(0.1 + 0.2), 30);
    assert.equal(toCents(19.99), 1999);
    assert.equal(toCents(1.15), 115);
    assert.equal(toCents(99999999.99), 9_999_999_999);
  });

  test('rejects what is not an amount', () => {
    for (const bad of ['', 'abc', '1.234', '1e3', '1,00', ' . ', '--1'])
      assert.throws(() => toCents(bad), RangeError);
    assert.throws(() => toCents(Number.NaN), RangeError);
    assert.throws(() => toCents(Number.POSITIVE_INFINITY), RangeError);
  });

  test('formats with exactly two places', () => {
    assert.equal(formatCents(1999), '19.99');
    assert.equal(formatCents(5), '0.05');
    assert.equal(formatCents(-5), '-0.05');
    assert.equal(formatCents(100), '1.00');
    assert.throws(() => formatCents(1.5), RangeError);
  });

  test('format and parse round-trip, and sums never drift', () => {
    fc.assert(
      fc.property(fc.integer({ min: -1e12, max: 1e12 }), (cents) => toCents(formatCents(cents)) === cents),
    );
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 9_999_999_999 }), { maxLength: 50 }), (prices) => {
        const viaStrings = prices.map((c) => toCents(formatCents(c))).reduce((a, b) => a + b, 0);
        return viaStrings === prices.reduce((a, b) => a + b, 0);
      }),
    );
  });
});
