import { beforeEach, describe, expect, it } from 'vitest';
import type { Lease, MetaIndex } from '../../src/ports/meta-index.js';
import type { TestClock } from '../support/clock.js';
import { acquired, key, refusedBy, TTL, type MetaIndexSubject } from './meta-index-fixture.js';

/**
 * The lease part of the MetaIndex contract (acquireLease, renewLease, releaseLease): one holder
 * at a time, refusals that name the holder with its token and expiry, expiry by the TestClock,
 * fencing tokens that only grow (max(previous + 1, clock), whatever happened to the item in
 * between) and lease items that no other method mistakes for something else. The lease's state
 * is in meta-index-lease-state.contract.ts. Called by metaIndexContract inside its describe,
 * with the subject its beforeEach makes.
 */
export function leasesContract(subject: () => MetaIndexSubject): void {
  let clock: TestClock;
  let index: MetaIndex;

  describe('leases', () => {
    beforeEach(() => {
      ({ clock, index } = subject());
    });

    const lk = key('lease', 'leases');

    it('acquires a free lease with a token and expiry', async () => {
      const result = await index.acquireLease(lk, 'A', TTL);
      expect(result).toEqual({ acquired: true, lease: { key: lk, owner: 'A', token: expect.any(Number), expiresAt: clock.now() + TTL } });
      expect(acquired(result).token).toBeGreaterThan(0);
    });

    it('lets the holder reacquire (a retry), extending it and keeping the token', async () => {
      const first = acquired(await index.acquireLease(lk, 'A', TTL));
      clock.advance(TTL - 1);
      const again = await index.acquireLease(lk, 'A', TTL);
      expect(again).toEqual({ acquired: true, lease: { ...first, expiresAt: clock.now() + TTL } });
      clock.advance(TTL - 1); // past the first expiry, within the extension
      expect(await index.acquireLease(lk, 'B', TTL)).toEqual(refusedBy(acquired(again)));
    });

    it('refuses another owner while it is held, up to the instant it expires', async () => {
      const a = acquired(await index.acquireLease(lk, 'A', TTL));
      expect(await index.acquireLease(lk, 'B', TTL)).toEqual(refusedBy(a));
      clock.advance(TTL - 1);
      expect(await index.acquireLease(lk, 'B', TTL)).toEqual(refusedBy(a));
    });

    it('reports on refusal the current holder, its token and its expiry exactly', async () => {
      const a = acquired(await index.acquireLease(lk, 'A', TTL));
      const refusal = await index.acquireLease(lk, 'B', TTL);
      expect(refusal).toEqual({ acquired: false, holder: 'A', token: a.token, expiresAt: clock.now() + TTL });
      // A renewal moves the expiry a waiter sees; the token stays.
      clock.advance(1_000);
      const renewed = (await index.renewLease(a, 2 * TTL))!;
      expect(await index.acquireLease(lk, 'B', TTL)).toEqual({ acquired: false, holder: 'A', token: a.token, expiresAt: clock.now() + 2 * TTL });
      // After a takeover the refusal names the new holder and its larger token.
      clock.advance(2 * TTL);
      const c = acquired(await index.acquireLease(lk, 'C', TTL));
      const afterTakeover = await index.acquireLease(lk, 'B', TTL);
      expect(afterTakeover).toEqual(refusedBy(c));
      expect(c.token).toBeGreaterThan(renewed.token);
    });

    it('lets a refused acquirer take the lease once the reported expiry has come', async () => {
      const a = acquired(await index.acquireLease(lk, 'A', TTL));
      clock.advance(5_000);
      const refusal = await index.acquireLease(lk, 'B', TTL);
      expect(refusal).toEqual(refusedBy(a));
      if (refusal.acquired) return;
      expect(refusal.expiresAt).toBeGreaterThan(clock.now());
      clock.advance(refusal.expiresAt - clock.now() - 1); // one ms early: still held
      expect(await index.acquireLease(lk, 'B', TTL)).toEqual(refusedBy(a));
      clock.advance(1); // the reported expiry
      const b = acquired(await index.acquireLease(lk, 'B', TTL));
      expect(b).toEqual({ key: lk, owner: 'B', token: expect.any(Number), expiresAt: clock.now() + TTL });
      expect(b.token).toBeGreaterThan(refusal.token);
      expect(await index.acquireLease(lk, 'A', TTL)).toEqual(refusedBy(b));
    });

    it('is taken over after expiry, with a larger token', async () => {
      const a = acquired(await index.acquireLease(lk, 'A', TTL));
      clock.advance(TTL);
      const b = acquired(await index.acquireLease(lk, 'B', TTL));
      expect(b).toMatchObject({ owner: 'B', expiresAt: clock.now() + TTL });
      expect(b.token).toBeGreaterThan(a.token);
      expect(await index.acquireLease(lk, 'A', TTL)).toEqual(refusedBy(b));
    });

    it('is renewed by its holder, keeping the token (idempotent)', async () => {
      const a = acquired(await index.acquireLease(lk, 'A', TTL));
      clock.advance(TTL - 1);
      const renewed = await index.renewLease(a, TTL);
      expect(renewed).toEqual({ ...a, expiresAt: clock.now() + TTL });
      expect(await index.renewLease(renewed!, TTL)).toEqual(renewed);
      expect(await index.renewLease(a, TTL)).toEqual(renewed); // the older copy of the same lease
      clock.advance(TTL - 1);
      expect(await index.acquireLease(lk, 'B', TTL)).toEqual(refusedBy(renewed!));
    });

    it('cannot be renewed once expired or taken over', async () => {
      const a = acquired(await index.acquireLease(lk, 'A', TTL));
      clock.advance(TTL);
      expect(await index.renewLease(a, TTL)).toBeUndefined();
      const b = acquired(await index.acquireLease(lk, 'B', TTL));
      expect(await index.renewLease(a, TTL)).toBeUndefined();
      expect(await index.renewLease({ ...a, token: b.token }, TTL)).toBeUndefined(); // right token, wrong owner
      expect(await index.acquireLease(lk, 'A', TTL)).toEqual(refusedBy(b)); // B still holds it
      expect(await index.renewLease(b, TTL)).toMatchObject({ owner: 'B', token: b.token });
    });

    it('is released by its holder so the next acquirer need not wait, with a larger token', async () => {
      const a = acquired(await index.acquireLease(lk, 'A', TTL));
      expect(await index.releaseLease(a)).toBe(true);
      expect(await index.releaseLease(a)).toBe(false); // idempotent: already given up
      expect(await index.renewLease(a, TTL)).toBeUndefined();
      const b = acquired(await index.acquireLease(lk, 'B', TTL));
      expect(b.owner).toBe('B');
      expect(b.token).toBeGreaterThan(a.token);
    });

    it('ignores a release or renewal by a holder that already lost it', async () => {
      const a = acquired(await index.acquireLease(lk, 'A', TTL));
      clock.advance(TTL);
      const b = acquired(await index.acquireLease(lk, 'B', TTL));
      expect(await index.releaseLease(a)).toBe(false);
      expect(await index.acquireLease(lk, 'C', TTL)).toEqual(refusedBy(b));
      expect(await index.renewLease(b, TTL)).toBeDefined();
    });

    it('fences an owner from its own earlier acquisition', async () => {
      const first = acquired(await index.acquireLease(lk, 'A', TTL));
      await index.releaseLease(first);
      const second = acquired(await index.acquireLease(lk, 'A', TTL));
      expect(second.token).toBeGreaterThan(first.token);
      expect(await index.renewLease(first, TTL)).toBeUndefined();
      expect(await index.releaseLease(first)).toBe(false);
      expect(await index.renewLease(second, TTL)).toBeDefined();
    });

    it('keeps fencing tokens strictly increasing across releases, expiries and owners', async () => {
      const tokens: number[] = [];
      const owners = ['A', 'B', 'A', 'C', 'C', 'B'];
      for (const [i, owner] of owners.entries()) {
        const lease = acquired(await index.acquireLease(lk, owner, TTL), `acquisition ${i} by ${owner}`);
        tokens.push(lease.token);
        if (i % 2 === 0) expect(await index.releaseLease(lease)).toBe(true);
        else clock.advance(TTL);
      }
      for (let i = 1; i < tokens.length; i++) expect(tokens[i]).toBeGreaterThan(tokens[i - 1]!);
    });

    it('fails, and changes nothing, when add is called on a lease item, live, released or expired', async () => {
      const ends: Array<[string, (a: Lease) => Promise<unknown>]> = [
        ['live', async () => undefined],
        ['released', (a) => index.releaseLease(a, { step: 'released' })],
        ['expired', async () => clock.advance(TTL)],
      ];
      for (const [i, [how, end]] of ends.entries()) {
        const k = key(`add-${i}`, 'leases');
        const a = acquired(await index.acquireLease(k, 'A', TTL));
        await index.updateLease(a, { step: how }, TTL);
        await end(a);
        const [item, view] = [await index.get(k), await index.readLease(k)];
        await expect(index.add(k, 1), how).rejects.toThrow(TypeError);
        expect(await index.get(k), how).toEqual(item);
        expect(await index.readLease(k), how).toEqual(view);
        if (how === 'live') expect(await index.acquireLease(k, 'B', TTL), how).toEqual(refusedBy(a, { step: how }));
      }
    });

    it('keeps separate keys independent', async () => {
      const a = acquired(await index.acquireLease(key('one', 'leases'), 'A', TTL));
      const b = acquired(await index.acquireLease(key('two', 'leases'), 'B', TTL));
      expect(a.owner).toBe('A');
      expect(b.owner).toBe('B');
    });

    it('fails, and changes nothing, on a live item that is not a lease', async () => {
      await index.put(lk, { not: 'a lease' });
      await expect(index.acquireLease(lk, 'A', TTL)).rejects.toThrow(TypeError);
      expect(await index.get(lk)).toEqual({ value: { not: 'a lease' }, version: 1 });
      await index.put(lk, 'short-lived', { expiresAt: clock.now() + 5 });
      clock.advance(5); // expired: free for a lease
      expect(acquired(await index.acquireLease(lk, 'A', TTL)).owner).toBe('A');
    });
  });

  describe('fencing tokens', () => {
    beforeEach(() => {
      ({ clock, index } = subject());
    });

    const lk = key('lease', 'leases');

    it('are max(previous token + 1, clock.now()) for each new holder', async () => {
      const a = acquired(await index.acquireLease(lk, 'A', TTL));
      expect(a.token).toBe(clock.now()); // no previous token
      await index.releaseLease(a);
      const b = acquired(await index.acquireLease(lk, 'B', TTL)); // same instant: previous + 1
      expect(b.token).toBe(a.token + 1);
      clock.advance(TTL); // expired: the clock is ahead again
      expect(acquired(await index.acquireLease(lk, 'C', TTL)).token).toBe(clock.now());
    });

    // Each way a lease can end, twice within the same millisecond (so only the stored token
    // keeps the next one larger) and once more after the clock moved.
    const ends: Array<[string, (lease: Lease) => Promise<unknown>]> = [
      ['released', async (lease) => expect(await index.releaseLease(lease)).toBe(true)],
      ['deleted while held', async (lease) => expect(await index.delete(lease.key)).toBe(true)],
      ['released, overwritten by put and deleted', async (lease) => {
        await index.releaseLease(lease);
        await index.put(lease.key, 'not a lease any more');
        expect(await index.delete(lease.key)).toBe(true);
      }],
      ['overwritten by put, then expired', async (lease) => {
        await index.put(lease.key, { plain: true }, { expiresAt: clock.now() + 1 });
        clock.advance(1);
      }],
      ['expired', async () => clock.advance(TTL)],
    ];
    for (const [how, end] of ends) {
      it(`only grow when the lease was ${how} before the next acquisition`, async () => {
        const tokens: number[] = [];
        for (const [i, owner] of ['A', 'B', 'A'].entries()) {
          if (i === 2) clock.advance(1_000);
          const lease = acquired(await index.acquireLease(lk, owner, TTL), `acquisition ${i} by ${owner}`);
          expect(lease.token, `acquisition ${i}: never behind the clock`).toBeGreaterThanOrEqual(clock.now());
          tokens.push(lease.token);
          await end(lease);
        }
        for (let i = 1; i < tokens.length; i++) expect(tokens[i], `acquisition ${i}`).toBeGreaterThan(tokens[i - 1]!);
      });
    }
  });
}
