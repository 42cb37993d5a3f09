import { expect } from 'vitest';
import type { ItemKey, Lease, LeaseResult, MetaIndex } from '../../src/ports/meta-index.js';
import type { TestClock } from '../support/clock.js';

/**
 * What the MetaIndex contract (meta-index.contract.ts) and its sibling groups
 * (meta-index-leases.contract.ts, meta-index-races.contract.ts) share: the fixture an adapter
 * hands in, the per-test subject, and the keys and lease time the tests use.
 */

/**
 * An adapter under test. `other`, when given, is a second independent instance over the same
 * storage (a second process, as far as the adapter can tell): writes through one must be seen
 * by the other, and the races are split across both.
 */
export interface MetaIndexFixture {
  index: MetaIndex;
  other?: MetaIndex;
  cleanup?: () => void | Promise<void>;
}

/**
 * What one test runs against, made afresh by the contract's beforeEach. A sibling group reads
 * it in a beforeEach of its own (which runs after the contract's), never at collection time.
 */
export interface MetaIndexSubject {
  clock: TestClock;
  fixture: MetaIndexFixture;
  index: MetaIndex;
}

export const TTL = 30_000;

export const key = (sk: string, pk = 'p'): ItemKey => ({ pk, sk });

/** The lease an acquireLease result must hold (fails the test when it was refused). */
export function acquired(result: LeaseResult, message?: string): Lease {
  expect(result, message).toMatchObject({ acquired: true });
  return (result as { lease: Lease }).lease;
}

/** The refusal acquireLease must report while `lease` is held: its holder, token and expiry exactly. */
export const refusedBy = (lease: Lease): LeaseResult => ({
  acquired: false,
  holder: lease.owner,
  token: lease.token,
  expiresAt: lease.expiresAt,
});
