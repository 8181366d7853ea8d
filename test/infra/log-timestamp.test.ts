import assert from 'node:assert/strict';
import { test } from 'node:test';
import pino from 'pino';
import { isoTimestamp } from '../../src/infra/logger.js';

test("the log line's timestamp is pino's isoTime text, across seconds, milliseconds and years", () => {
  const reference = (now: number) => `,"time":"${new Date(now).toISOString()}"`;
  const samples = [
    0,
    1,
    9,
    10,
    99,
    100,
    999,
    1000,
    1001,
    59_999,
    60_000,
    Date.UTC(2026, 11, 31, 23, 59, 59, 999),
  ];
  for (let now = Date.UTC(2026, 11, 2, 19, 45, 58, 990); now < Date.UTC(2026, 11, 2, 19, 46, 1, 20); now += 7)
    samples.push(now);
  // Back and forth in time (clock steps) as well as forward.
  for (const now of [...samples, ...samples.reverse()])
    assert.equal(isoTimestamp(now), reference(now), String(now));
  const live = isoTimestamp();
  assert.match(live, /^,"time":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"$/);
  assert.equal(pino.stdTimeFunctions.isoTime().length, live.length);
});
