import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createBreaker } from '../../src/infra/redis.js';

describe('circuit breaker', () => {
  function fakeClock() {
    let now = 0;
    return { now: () => now, advance: (ms: number) => (now += ms) };
  }

  test('opens after consecutive failures, probes once after the cool-down, closes on success', () => {
    const clock = fakeClock();
    const transitions: string[] = [];
    const breaker = createBreaker({ failureThreshold: 3, openMs: 1000 }, clock.now);
    breaker.onStateChange((s) => transitions.push(s));

    breaker.failure();
    breaker.failure();
    assert.equal(breaker.state(), 'closed');
    breaker.failure();
    assert.equal(breaker.state(), 'open');
    assert.equal(breaker.tryAcquire(), false, 'calls are refused at once while open');

    clock.advance(1000);
    assert.equal(breaker.state(), 'half-open');
    assert.equal(breaker.tryAcquire(), true, 'one probe');
    assert.equal(breaker.tryAcquire(), false, 'only one probe at a time');
    breaker.success();
    assert.equal(breaker.state(), 'closed');
    assert.deepEqual(transitions, ['open', 'half-open', 'closed']);
  });

  test('a failed probe opens it again for another cool-down', () => {
    const clock = fakeClock();
    const breaker = createBreaker({ failureThreshold: 2, openMs: 500 }, clock.now);
    breaker.failure();
    breaker.failure();
    clock.advance(500);
    assert.equal(breaker.tryAcquire(), true);
    breaker.failure();
    assert.equal(breaker.state(), 'open');
    clock.advance(499);
    assert.equal(breaker.tryAcquire(), false);
    clock.advance(1);
    assert.equal(breaker.tryAcquire(), true);
  });

  test('a success resets the failure count', () => {
    const breaker = createBreaker({ failureThreshold: 2, openMs: 500 }, () => 0);
    breaker.failure();
    breaker.success();
    breaker.failure();
    assert.equal(breaker.state(), 'closed');
  });
});
