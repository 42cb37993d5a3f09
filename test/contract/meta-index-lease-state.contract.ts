import { beforeEach, describe, expect, it } from 'vitest';
import type { MetaIndex } from '../../src/ports/meta-index.js';
import type { TestClock } from '../support/clock.js';
import {
  acquired,
  key,
  loseRepliesOf,
  refusedBy,
  ReplyLost,
  TTL,
  type LossyIndex,
  type MetaIndexFixture,
  type MetaIndexSubject,
} from './meta-index-fixture.js';

/**
 * The lease's state (updateLease, releaseLease with a state, readLease): only the live holder
 * with its token writes it, every reader and the next holder see it, and the holder's writes
 * stay idempotent when a reply is lost after the store applied them. Called by
 * metaIndexContract inside its describe, with the subject its beforeEach makes.
 */
export function leaseStateContract(subject: () => MetaIndexSubject): void {
  let clock: TestClock;
  let fixture: MetaIndexFixture;
  let index: MetaIndex;

  const lk = key('fill', 'leases');

  describe('lease state', () => {
    beforeEach(() => {
      ({ clock, fixture, index } = subject());
    });

    it('readLease: undefined where no lease was taken, a TypeError on a live item of another kind', async () => {
      expect(await index.readLease(lk)).toBeUndefined();
      await index.put(key('plain', 'leases'), { not: 'a lease' });
      await expect(index.readLease(key('plain', 'leases'))).rejects.toThrow(TypeError);
      await index.put(key('gone', 'leases'), 'plain');
      await index.delete(key('gone', 'leases'));
      expect(await index.readLease(key('gone', 'leases'))).toBeUndefined();
    });

    it('readLease shows the token, the live holder and its expiry, and no holder once free', async () => {
      const a = acquired(await index.acquireLease(lk, 'A', TTL));
      expect(await index.readLease(lk)).toEqual({ token: a.token, holder: 'A', expiresAt: a.expiresAt });
      clock.advance(TTL);
      expect(await index.readLease(lk)).toEqual({ token: a.token, expiresAt: a.expiresAt });
    });

    it('updateLease writes the state and extends the lease, keeping the token; readers see it', async () => {
      const a = acquired(await index.acquireLease(lk, 'A', TTL));
      clock.advance(1_000);
      const updated = await index.updateLease(a, { parts: 1 }, TTL);
      expect(updated).toEqual({ ...a, expiresAt: clock.now() + TTL });
      expect(await index.readLease(lk)).toEqual({ token: a.token, holder: 'A', expiresAt: clock.now() + TTL, state: { parts: 1 } });
      expect(await index.acquireLease(lk, 'B', TTL)).toEqual(refusedBy(updated!, { parts: 1 }));
      expect(await index.updateLease(updated!, { parts: 2 }, TTL)).toEqual(updated);
      expect((await index.readLease(lk))?.state).toEqual({ parts: 2 });
      // The holder's own retry of acquireLease hands back what is stored, its own state included.
      expect(await index.acquireLease(lk, 'A', TTL)).toEqual({ acquired: true, lease: updated, state: { parts: 2 } });
    });

    it('renewLease keeps the state', async () => {
      const a = acquired(await index.acquireLease(lk, 'A', TTL));
      await index.updateLease(a, 'step 1', TTL);
      const renewed = await index.renewLease(a, 2 * TTL);
      expect(await index.readLease(lk)).toEqual({ token: a.token, holder: 'A', expiresAt: renewed!.expiresAt, state: 'step 1' });
    });

    it('updateLease by a holder that lost the lease to another writes nothing', async () => {
      const a = acquired(await index.acquireLease(lk, 'A', TTL));
      await index.updateLease(a, { by: 'A' }, TTL);
      clock.advance(TTL);
      const b = acquired(await index.acquireLease(lk, 'B', TTL));
      await index.updateLease(b, { by: 'B' }, TTL);
      expect(await index.updateLease(a, { by: 'stale A' }, TTL)).toBeUndefined();
      expect(await index.updateLease({ ...a, token: b.token }, { by: 'A with B token' }, TTL)).toBeUndefined();
      expect(await index.readLease(lk)).toEqual({ token: b.token, holder: 'B', expiresAt: b.expiresAt, state: { by: 'B' } });
    });

    it('updateLease after expiry fails even when nobody took the lease over', async () => {
      const a = acquired(await index.acquireLease(lk, 'A', TTL));
      await index.updateLease(a, 'before', TTL);
      clock.advance(TTL);
      expect(await index.updateLease(a, 'after', TTL)).toBeUndefined();
      expect(await index.readLease(lk)).toEqual({ token: a.token, expiresAt: clock.now(), state: 'before' });
    });

    it('a new holder receives the state the previous one left, which stays until it writes its own', async () => {
      const a = acquired(await index.acquireLease(lk, 'A', TTL));
      expect(await index.acquireLease(lk, 'A', TTL)).toEqual({ acquired: true, lease: a }); // nothing written yet
      await index.updateLease(a, { parts: [1, 2] }, TTL);
      clock.advance(TTL);
      const result = await index.acquireLease(lk, 'B', TTL);
      expect(result).toEqual({ acquired: true, lease: expect.objectContaining({ owner: 'B' }), state: { parts: [1, 2] } });
      const b = acquired(result);
      expect(await index.readLease(lk)).toEqual({ token: b.token, holder: 'B', expiresAt: b.expiresAt, state: { parts: [1, 2] } });
      expect(await index.acquireLease(lk, 'C', TTL)).toEqual(refusedBy(b, { parts: [1, 2] }));
      await index.updateLease(b, { parts: [1, 2, 3] }, TTL);
      expect((await index.readLease(lk))?.state).toEqual({ parts: [1, 2, 3] });
    });

    it('releaseLease writes its state in the same step, or keeps the last one without', async () => {
      const a = acquired(await index.acquireLease(lk, 'A', TTL));
      await index.updateLease(a, 'working', TTL);
      expect(await index.releaseLease(a, { done: true })).toBe(true);
      expect(await index.readLease(lk)).toEqual({ token: a.token, expiresAt: clock.now(), state: { done: true } });
      const b = acquired(await index.acquireLease(lk, 'B', TTL));
      expect(await index.acquireLease(lk, 'C', TTL)).toEqual(refusedBy(b, { done: true }));
      expect(await index.releaseLease(b)).toBe(true);
      expect((await index.readLease(lk))?.state).toEqual({ done: true });
    });

    it('releaseLease by a holder that lost the lease writes nothing', async () => {
      const a = acquired(await index.acquireLease(lk, 'A', TTL));
      clock.advance(TTL);
      expect(await index.releaseLease(a, 'stale, expired')).toBe(false);
      expect((await index.readLease(lk))?.state).toBeUndefined();
      const b = acquired(await index.acquireLease(lk, 'B', TTL));
      await index.updateLease(b, 'B working', TTL);
      expect(await index.releaseLease(a, 'stale, taken over')).toBe(false);
      expect(await index.readLease(lk)).toEqual({ token: b.token, holder: 'B', expiresAt: b.expiresAt, state: 'B working' });
    });

    it('delete ends the lease and its state; only the token survives', async () => {
      const a = acquired(await index.acquireLease(lk, 'A', TTL));
      await index.updateLease(a, 'gone with the item', TTL);
      expect(await index.delete(lk)).toBe(true);
      const view = await index.readLease(lk);
      expect(view).toEqual({ token: a.token, expiresAt: expect.any(Number) });
      expect(view!.expiresAt).toBeLessThanOrEqual(clock.now());
      const b = await index.acquireLease(lk, 'B', TTL);
      expect(b).toEqual({ acquired: true, lease: expect.objectContaining({ owner: 'B' }) });
      expect(acquired(b).token).toBeGreaterThan(a.token);
    });
  });

  /**
   * A reply lost after the store applied the write, and the caller retrying with the same
   * arguments: the retry finds its own write and neither fails nor writes anything else.
   */
  describe('lease writes retried after a lost reply', () => {
    let lossy: LossyIndex;
    beforeEach(() => {
      ({ clock, fixture, index } = subject());
      lossy = fixture.lossy ?? loseRepliesOf(index);
    });

    it('acquireLease: the retry holds the lease with the token the lost reply carried', async () => {
      const a = acquired(await index.acquireLease(lk, 'A', TTL));
      await index.updateLease(a, 'left by A', TTL);
      clock.advance(TTL);
      lossy.loseNextReply();
      await expect(lossy.index.acquireLease(lk, 'B', TTL)).rejects.toThrow(ReplyLost);
      const applied = (await index.readLease(lk))!;
      expect(applied).toMatchObject({ holder: 'B', state: 'left by A' });
      clock.advance(1_000);
      const retry = await index.acquireLease(lk, 'B', TTL);
      expect(retry).toEqual({
        acquired: true,
        lease: { key: lk, owner: 'B', token: applied.token, expiresAt: clock.now() + TTL },
        state: 'left by A',
      });
      expect(await index.acquireLease(lk, 'C', TTL)).toEqual(refusedBy(acquired(retry), 'left by A'));
    });

    it('updateLease: the retry succeeds with the same lease and the state is the one written', async () => {
      const a = acquired(await index.acquireLease(lk, 'A', TTL));
      lossy.loseNextReply();
      await expect(lossy.index.updateLease(a, { parts: 1 }, TTL)).rejects.toThrow(ReplyLost);
      expect((await index.readLease(lk))?.state).toEqual({ parts: 1 });
      const retry = await index.updateLease(a, { parts: 1 }, TTL);
      expect(retry).toEqual({ ...a, expiresAt: clock.now() + TTL });
      expect(await index.readLease(lk)).toEqual({ token: a.token, holder: 'A', expiresAt: retry!.expiresAt, state: { parts: 1 } });
      expect(await index.acquireLease(lk, 'B', TTL)).toEqual(refusedBy(retry!, { parts: 1 }));
    });

    it('releaseLease: the retry answers "already given up" and the state and the token stay as released', async () => {
      const a = acquired(await index.acquireLease(lk, 'A', TTL));
      lossy.loseNextReply();
      await expect(lossy.index.releaseLease(a, { done: true })).rejects.toThrow(ReplyLost);
      const released = await index.readLease(lk);
      expect(released).toEqual({ token: a.token, expiresAt: clock.now(), state: { done: true } });
      // The contract's idempotency for release: false on a lease already given up, nothing written.
      expect(await index.releaseLease(a, { done: true })).toBe(false);
      expect(await index.readLease(lk)).toEqual(released);
      const b = await index.acquireLease(lk, 'B', TTL); // free at once, no wait for an expiry
      expect(b).toEqual({ acquired: true, lease: expect.objectContaining({ owner: 'B' }), state: { done: true } });
      expect(acquired(b).token).toBeGreaterThan(a.token);
    });
  });
}
