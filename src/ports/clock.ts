/** Wall-clock milliseconds since the epoch. Injected so leases and expiry are tested without sleeping. */
export interface Clock {
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };
