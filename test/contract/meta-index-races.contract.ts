import { beforeEach, describe, expect, it } from 'vitest';
import type { Lease, LeaseResult, MetaIndex } from '../../src/ports/meta-index.js';
import type { TestClock } from '../support/clock.js';
import { acquired, key, refusedBy, TTL, type MetaIndexFixture, type MetaIndexSubject } from './meta-index-fixture.js';

/**
 * The concurrent part of the MetaIndex contract: a second instance over the same storage sees
 * every write, and each atomic operation has exactly one winner when RACERS callers contend
 * for it at once (split across both instances when there are two). Called by
 * metaIndexContract inside its describe, with the subject its beforeEach makes.
 */

/** Contenders in each race: enough to interleave, few enough to stay fast. */
const RACERS = 16;

export function racesContract(subject: () => MetaIndexSubject): void {
  let clock: TestClock;
  let fixture: MetaIndexFixture;
  let index: MetaIndex;
  const take = () => {
    ({ clock, fixture, index } = subject());
  };
  /** The instance racer `i` uses: alternates between both instances when there are two. */
  const racer = (i: number) => (fixture.other && i % 2 === 1 ? fixture.other : index);

  describe('a second instance over the same storage', () => {
    beforeEach(take);

    it('sees every write at once', async ({ skip }) => {
      if (!fixture.other) return skip();
      const other = fixture.other;
      await index.put(key('k'), 'from one');
      expect(await other.get(key('k'))).toEqual({ value: 'from one', version: 1 });
      expect(await other.compareAndSet(key('k'), 1, 'from two')).toBe(2);
      expect((await index.get(key('k')))?.value).toBe('from two');
      const lease = acquired(await index.acquireLease(key('l'), 'A', TTL));
      expect(await other.acquireLease(key('l'), 'B', TTL)).toEqual(refusedBy(lease));
      expect(await other.releaseLease(lease)).toBe(true);
      expect(acquired(await index.acquireLease(key('l'), 'B', TTL)).token).toBeGreaterThan(lease.token);
    });
  });

  describe('races (Promise.all)', () => {
    beforeEach(take);

    const all = <T>(make: (i: number) => Promise<T>) => Promise.all(Array.from({ length: RACERS }, (_, i) => make(i)));

    it('concurrent putIfAbsent: exactly one creates the item, and its value stays', async () => {
      const created = await all((i) => racer(i).putIfAbsent(key('k'), i));
      expect(created.filter(Boolean)).toHaveLength(1);
      expect(await index.get(key('k'))).toEqual({ value: created.indexOf(true), version: 1 });
    });

    it('concurrent putIfAbsent over an expired item: exactly one revives it', async () => {
      await index.put(key('k'), 'old', { expiresAt: clock.now() + 5 });
      clock.advance(5);
      const created = await all((i) => racer(i).putIfAbsent(key('k'), i));
      expect(created.filter(Boolean)).toHaveLength(1);
      expect(await index.get(key('k'))).toEqual({ value: created.indexOf(true), version: 2 });
    });

    it('concurrent compareAndSet from the same version: exactly one succeeds', async () => {
      const v = await index.put(key('k'), 'start');
      const results = await all((i) => racer(i).compareAndSet(key('k'), v, i));
      const winners = results.flatMap((r, i) => (r === undefined ? [] : [i]));
      expect(winners).toHaveLength(1);
      expect(results[winners[0]!]).toBe(v + 1);
      expect(await index.get(key('k'))).toEqual({ value: winners[0], version: v + 1 });
    });

    it('concurrent read-modify-write loops with compareAndSet lose no update', async () => {
      await index.put(key('k'), 0);
      await all(async (i) => {
        const ix = racer(i);
        for (;;) {
          const cur = (await ix.get<number>(key('k')))!;
          if ((await ix.compareAndSet(key('k'), cur.version, cur.value + 1)) !== undefined) return;
        }
      });
      expect((await index.get(key('k')))?.value).toBe(RACERS);
    });

    it('concurrent add(+1): no update is lost and every caller sees a distinct total', async () => {
      const totals = await all((i) => racer(i).add(key('n'), 1));
      expect([...totals].sort((a, b) => a - b)).toEqual(Array.from({ length: RACERS }, (_, i) => i + 1));
      expect((await index.get(key('n')))?.value).toBe(RACERS);
    });

    it('concurrent put: every writer gets a distinct version and one value wins whole', async () => {
      const versions = await all((i) => racer(i).put(key('k'), { writer: i, payload: 'x'.repeat(i) }));
      expect([...versions].sort((a, b) => a - b)).toEqual(Array.from({ length: RACERS }, (_, i) => i + 1));
      const last = versions.indexOf(RACERS);
      expect(await index.get(key('k'))).toEqual({ value: { writer: last, payload: 'x'.repeat(last) }, version: RACERS });
    });

    it('concurrent delete with the same expectedVersion: exactly one removes it', async () => {
      const v = await index.put(key('k'), 'x');
      const removed = await all((i) => racer(i).delete(key('k'), v));
      expect(removed.filter(Boolean)).toHaveLength(1);
      expect(await index.get(key('k'))).toBeUndefined();
    });

    it('concurrent acquireLease by different owners: exactly one holds it, the others name it', async () => {
      const results = await all((i) => racer(i).acquireLease(key('l'), `owner-${i}`, TTL));
      const held = winners(results);
      expect(held).toHaveLength(1);
      const winner = held[0]!;
      expect(winner).toEqual({ key: key('l'), owner: expect.any(String), token: expect.any(Number), expiresAt: clock.now() + TTL });
      for (const [i, r] of results.entries()) {
        if (`owner-${i}` !== winner.owner) expect(r, `racer ${i}`).toEqual(refusedBy(winner));
      }
      for (let i = 0; i < RACERS; i++) {
        const again = await racer(i).acquireLease(key('l'), `owner-${i}`, TTL);
        expect(again).toEqual(`owner-${i}` === winner.owner ? { acquired: true, lease: winner } : refusedBy(winner));
      }
    });

    it('concurrent acquireLease of a released lease with a state: one resumes it, the others name it and see it', async () => {
      const first = acquired(await index.acquireLease(key('l'), 'first', TTL));
      await index.releaseLease(first, { parts: 3 });
      const results = await all((i) => racer(i).acquireLease(key('l'), `owner-${i}`, TTL));
      const held = winners(results);
      expect(held).toHaveLength(1);
      expect(held[0]!.token).toBeGreaterThan(first.token);
      for (const [i, r] of results.entries()) {
        const won = `owner-${i}` === held[0]!.owner;
        expect(r, `racer ${i}`).toEqual(won ? { acquired: true, lease: held[0], state: { parts: 3 } } : refusedBy(held[0]!, { parts: 3 }));
      }
    });

    it("a stale holder's updateLease against its successor's: the successor's state survives", async () => {
      for (let round = 0; round < RACERS; round++) {
        const k = key(`l-${round}`);
        const stale = acquired(await index.acquireLease(k, 'stale', TTL));
        clock.advance(TTL);
        const next = acquired(await racer(round + 1).acquireLease(k, 'next', TTL));
        const [lost, kept] = await Promise.all([
          racer(round).updateLease(stale, { by: 'stale' }, TTL),
          racer(round + 1).updateLease(next, { by: 'next' }, TTL),
        ]);
        expect(lost, `round ${round}`).toBeUndefined();
        expect(kept, `round ${round}`).toEqual({ ...next, expiresAt: clock.now() + TTL });
        expect(await index.readLease(k), `round ${round}`).toEqual({
          token: next.token,
          holder: 'next',
          expiresAt: kept!.expiresAt,
          state: { by: 'next' },
        });
      }
    });

    it("a stale holder's updateLease racing its successor's takeover never lands on the successor", async () => {
      const stale = acquired(await index.acquireLease(key('l'), 'stale', TTL));
      await index.updateLease(stale, { by: 'stale', step: 0 }, TTL);
      clock.advance(TTL);
      const [lost, ...results] = await Promise.all([
        racer(0).updateLease(stale, { by: 'stale', step: 1 }, TTL),
        ...Array.from({ length: RACERS }, (_, i) => racer(i + 1).acquireLease(key('l'), `owner-${i}`, TTL)),
      ]);
      expect(lost).toBeUndefined();
      const held = winners(results);
      expect(held).toHaveLength(1);
      expect(await index.readLease(key('l'))).toMatchObject({ holder: held[0]!.owner, state: { by: 'stale', step: 0 } });
    });

    it('concurrent takeover of an expired lease: exactly one wins, with a larger token, the others name it', async () => {
      const first = acquired(await index.acquireLease(key('l'), 'first', TTL));
      clock.advance(TTL);
      const results = await all((i) => racer(i).acquireLease(key('l'), `owner-${i}`, TTL));
      const held = winners(results);
      expect(held).toHaveLength(1);
      expect(held[0]!.token).toBeGreaterThan(first.token);
      for (const [i, r] of results.entries()) {
        if (`owner-${i}` !== held[0]!.owner) expect(r, `racer ${i}`).toEqual(refusedBy(held[0]!));
      }
      expect(await index.renewLease(first, TTL)).toBeUndefined();
    });

    it('concurrent acquireLease while the holder releases: never an expired holder, at most one winner', async () => {
      const first = acquired(await index.acquireLease(key('l'), 'first', TTL));
      const [released, ...results] = await Promise.all([
        index.releaseLease(first),
        ...Array.from({ length: RACERS }, (_, i) => racer(i).acquireLease(key('l'), `owner-${i}`, TTL)),
      ]);
      expect(released).toBe(true);
      const held = winners(results);
      expect(held.length).toBeLessThanOrEqual(1);
      for (const [i, r] of results.entries()) {
        // Refused before the release (by `first`) or after it (by the one winner); never by a free lease.
        if (!r.acquired) expect(r, `racer ${i}`).toEqual(refusedBy(r.holder === 'first' ? first : held[0]!));
      }
      if (held.length === 0) acquired(await index.acquireLease(key('l'), 'late', TTL), 'released and free');
      else expect(held[0]!.token).toBeGreaterThan(first.token);
    });
  });
}

/** The leases a batch of acquireLease results holds. */
function winners(results: LeaseResult[]): Lease[] {
  return results.flatMap((r) => (r.acquired ? [r.lease] : []));
}
