import { expect } from 'vitest';
import type { ItemKey, Json, Lease, LeaseResult, MetaIndex } from '../../src/ports/meta-index.js';
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
  /**
   * An instance over the same storage whose replies can be lost, where the adapter has a finer
   * place to lose them than the method (DynamoDB: the client, after the store applied one
   * UpdateItem). Without it the contract uses loseRepliesOf(index), which is exact for an
   * adapter whose every method is one atomic step.
   */
  lossy?: LossyIndex;
  cleanup?: () => void | Promise<void>;
}

/** What a lost reply throws: the write was applied, the caller never heard. */
export class ReplyLost extends Error {
  constructor() {
    super('reply lost after the write was applied');
  }
}

/**
 * A MetaIndex whose next write, once armed, is applied and then answered with ReplyLost, the
 * way a dropped connection or a timeout looks to a caller that then retries.
 */
export interface LossyIndex {
  index: MetaIndex;
  loseNextReply(): void;
}

const READS = new Set<PropertyKey>(['get', 'list', 'readLease']);

/** Loses, once armed, the reply of the next writing method called on `index`, after it ran. */
export function loseRepliesOf(index: MetaIndex): LossyIndex {
  let armed = false;
  const lossy = new Proxy(index, {
    get(target, name, receiver) {
      const member = Reflect.get(target, name, receiver) as unknown;
      if (typeof member !== 'function' || READS.has(name)) return member;
      return async (...args: unknown[]) => {
        const result = (await (member as (...a: unknown[]) => Promise<unknown>).apply(target, args)) as unknown;
        if (!armed) return result;
        armed = false;
        throw new ReplyLost();
      };
    },
  });
  return { index: lossy, loseNextReply: () => (armed = true) };
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

/**
 * The refusal acquireLease must report while `lease` is held: its holder, token and expiry
 * exactly, and the state last written to it (none when `state` is left out).
 */
export const refusedBy = (lease: Lease, state?: Json): LeaseResult => ({
  acquired: false,
  holder: lease.owner,
  token: lease.token,
  expiresAt: lease.expiresAt,
  ...(state === undefined ? {} : { state }),
});
