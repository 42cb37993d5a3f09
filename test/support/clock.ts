import type { Clock } from '../../src/ports/clock.js';

/** A controllable clock for TTL tests without sleeping. */
export class TestClock implements Clock {
  constructor(public time = 1_700_000_000_000) {}
  now(): number {
    return this.time;
  }
  advance(ms: number): void {
    this.time += ms;
  }
}
