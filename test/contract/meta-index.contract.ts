import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { EXPIRED_ITEM_RETENTION_MS, type MetaIndex } from '../../src/ports/meta-index.js';
import { TestClock } from '../support/clock.js';
import { key, TTL, type MetaIndexFixture, type MetaIndexSubject } from './meta-index-fixture.js';
import { leaseStateContract } from './meta-index-lease-state.contract.js';
import { leasesContract } from './meta-index-leases.contract.js';
import { racesContract } from './meta-index-races.contract.js';

export type { MetaIndexFixture } from './meta-index-fixture.js';

/**
 * The MetaIndex contract (src/ports/meta-index.ts), run against every adapter. Each method's
 * doc comment is a promise; each promise has a test here or in a sibling group (leases in
 * meta-index-leases.contract.ts; the second instance and the races in
 * meta-index-races.contract.ts). Time moves only through the TestClock, never by sleeping.
 */

/** Node's byte comparison of the UTF-8 encodings: an oracle independent of the adapters. */
const utf8Order = (a: string, b: string) => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));

export function metaIndexContract(label: string, makeIndex: (clock: TestClock) => MetaIndexFixture | Promise<MetaIndexFixture>) {
  describe(`MetaIndex contract: ${label}`, () => {
    let clock: TestClock;
    let fixture: MetaIndexFixture;
    let index: MetaIndex;
    const subject = (): MetaIndexSubject => ({ clock, fixture, index });

    beforeEach(async () => {
      clock = new TestClock();
      fixture = await makeIndex(clock);
      index = fixture.index;
    });

    afterEach(async () => {
      await fixture.cleanup?.();
    });

    describe('get', () => {
      it('returns undefined for a key never written', async () => {
        expect(await index.get(key('missing'))).toBeUndefined();
        expect(await index.get(key('x', 'no-such-partition'))).toBeUndefined();
      });

      it('returns the value and version, and round-trips any JSON', async () => {
        const value = { s: 'ünïcødé 😀', n: -1.5, b: true, z: null, a: [1, 'two', { three: [] }], o: {} };
        await index.put(key('k'), value);
        expect(await index.get(key('k'))).toEqual({ value, version: 1 });
        for (const scalar of [null, false, 0, '', 'text', 42]) {
          await index.put(key('scalar'), scalar);
          expect((await index.get(key('scalar')))?.value).toEqual(scalar);
        }
      });

      it('keeps partitions and sort keys apart', async () => {
        await index.put(key('k', 'p1'), 'one');
        await index.put(key('k', 'p2'), 'two');
        await index.put(key('k2', 'p1'), 'three');
        expect((await index.get(key('k', 'p1')))?.value).toBe('one');
        expect((await index.get(key('k', 'p2')))?.value).toBe('two');
        expect((await index.get(key('k2', 'p1')))?.value).toBe('three');
      });

      it('hands out a copy: mutating a read value does not change the item', async () => {
        await index.put(key('k'), { list: [1] });
        const read = await index.get<{ list: number[] }>(key('k'));
        read!.value.list.push(2);
        expect((await index.get(key('k')))?.value).toEqual({ list: [1] });
      });

      it('reports expiresAt and treats the item as absent from that instant on', async () => {
        const expiresAt = clock.now() + 1_000;
        await index.put(key('k'), 'v', { expiresAt });
        expect(await index.get(key('k'))).toEqual({ value: 'v', version: 1, expiresAt });
        clock.advance(999);
        expect((await index.get(key('k')))?.value).toBe('v');
        clock.advance(1);
        expect(await index.get(key('k'))).toBeUndefined();
      });
    });

    describe('putIfAbsent', () => {
      it('creates an absent item at version 1', async () => {
        expect(await index.putIfAbsent(key('k'), 'first')).toBe(true);
        expect(await index.get(key('k'))).toEqual({ value: 'first', version: 1 });
      });

      it('leaves a live item untouched and returns false (so a retry is harmless)', async () => {
        await index.putIfAbsent(key('k'), 'first', { expiresAt: clock.now() + TTL });
        expect(await index.putIfAbsent(key('k'), 'second')).toBe(false);
        expect(await index.putIfAbsent(key('k'), 'first')).toBe(false);
        expect(await index.get(key('k'))).toEqual({ value: 'first', version: 1, expiresAt: clock.now() + TTL });
      });

      it('revives an expired item with a new version', async () => {
        await index.putIfAbsent(key('k'), 'old', { expiresAt: clock.now() + 10 });
        clock.advance(10);
        expect(await index.putIfAbsent(key('k'), 'new')).toBe(true);
        expect(await index.get(key('k'))).toEqual({ value: 'new', version: 2 });
      });

      it('recreates a deleted item with a new version', async () => {
        await index.putIfAbsent(key('k'), 'old');
        await index.delete(key('k'));
        expect(await index.putIfAbsent(key('k'), 'new', { expiresAt: clock.now() + TTL })).toBe(true);
        expect(await index.get(key('k'))).toEqual({ value: 'new', version: 2, expiresAt: clock.now() + TTL });
      });
    });

    describe('put', () => {
      it('writes whatever is there, returning 1, 2, 3 ...', async () => {
        expect(await index.put(key('k'), 'a')).toBe(1);
        expect(await index.put(key('k'), 'b')).toBe(2);
        expect(await index.put(key('k'), 'b')).toBe(3);
        expect(await index.get(key('k'))).toEqual({ value: 'b', version: 3 });
      });

      it('sets and clears the expiry with each write', async () => {
        await index.put(key('k'), 'a', { expiresAt: clock.now() + 5 });
        expect((await index.get(key('k')))?.expiresAt).toBe(clock.now() + 5);
        await index.put(key('k'), 'b');
        clock.advance(TTL);
        expect(await index.get(key('k'))).toEqual({ value: 'b', version: 2 });
      });

      it('overwrites an expired item with the next version', async () => {
        await index.put(key('k'), 'a', { expiresAt: clock.now() + 5 });
        clock.advance(5);
        expect(await index.put(key('k'), 'b')).toBe(2);
      });
    });

    describe('compareAndSet', () => {
      it('replaces the item when the version matches, returning the next version', async () => {
        const v = await index.put(key('k'), 'a');
        expect(await index.compareAndSet(key('k'), v, 'b')).toBe(v + 1);
        expect(await index.get(key('k'))).toEqual({ value: 'b', version: v + 1 });
        expect(await index.compareAndSet(key('k'), v + 1, 'c', { expiresAt: clock.now() + TTL })).toBe(v + 2);
        expect(await index.get(key('k'))).toEqual({ value: 'c', version: v + 2, expiresAt: clock.now() + TTL });
      });

      it('writes nothing on a version mismatch', async () => {
        await index.put(key('k'), 'a');
        await index.put(key('k'), 'b');
        expect(await index.compareAndSet(key('k'), 1, 'stale')).toBeUndefined();
        expect(await index.compareAndSet(key('k'), 3, 'future')).toBeUndefined();
        expect(await index.get(key('k'))).toEqual({ value: 'b', version: 2 });
      });

      it('refuses an expired item even at its last version', async () => {
        const v = await index.put(key('k'), 'a', { expiresAt: clock.now() + 5 });
        clock.advance(5);
        expect(await index.compareAndSet(key('k'), v, 'b')).toBeUndefined();
        expect(await index.get(key('k'))).toBeUndefined();
      });

      it('does not create an absent or deleted item', async () => {
        expect(await index.compareAndSet(key('never'), 0, 'x')).toBeUndefined();
        expect(await index.compareAndSet(key('never'), 1, 'x')).toBeUndefined();
        expect(await index.get(key('never'))).toBeUndefined();
        const v = await index.put(key('gone'), 'a');
        await index.delete(key('gone'));
        expect(await index.compareAndSet(key('gone'), v, 'x')).toBeUndefined();
        expect(await index.get(key('gone'))).toBeUndefined();
      });
    });

    describe('delete', () => {
      it('removes a live item and returns true once, then false (idempotent)', async () => {
        await index.put(key('k'), 'a');
        expect(await index.delete(key('k'))).toBe(true);
        expect(await index.get(key('k'))).toBeUndefined();
        expect(await index.delete(key('k'))).toBe(false);
        expect(await index.delete(key('never'))).toBe(false);
      });

      it('with expectedVersion removes only that version', async () => {
        await index.put(key('k'), 'a');
        const v = await index.put(key('k'), 'b');
        expect(await index.delete(key('k'), v - 1)).toBe(false);
        expect(await index.get(key('k'))).toEqual({ value: 'b', version: v });
        expect(await index.delete(key('k'), v)).toBe(true);
        expect(await index.get(key('k'))).toBeUndefined();
        expect(await index.delete(key('k'), v)).toBe(false);
      });

      it('returns false for an expired item', async () => {
        const v = await index.put(key('k'), 'a', { expiresAt: clock.now() + 5 });
        clock.advance(5);
        expect(await index.delete(key('k'))).toBe(false);
        expect(await index.delete(key('k'), v)).toBe(false);
      });

      it('removes only its own item', async () => {
        await index.put(key('a'), 1);
        await index.put(key('b'), 2);
        await index.delete(key('a'));
        expect((await index.get(key('b')))?.value).toBe(2);
        expect((await index.list('p', { limit: 10 })).map((e) => e.sk)).toEqual(['b']);
      });
    });

    describe('versions', () => {
      it('are never reused for a key, across delete, expiry and every kind of write', async () => {
        const seen: number[] = [];
        const k = key('k');
        const current = async () => (await index.get(k))!.version;
        seen.push(await index.put(k, 'a'));
        await index.delete(k);
        seen.push(await index.put(k, 'b', { expiresAt: clock.now() + 5 }));
        clock.advance(5);
        expect(await index.putIfAbsent(k, 'c', { expiresAt: clock.now() + 5 })).toBe(true);
        seen.push(await current());
        clock.advance(5);
        await index.add(k, 1);
        seen.push(await current());
        seen.push((await index.compareAndSet(k, await current(), 'd'))!);
        await index.delete(k, await current());
        expect(await index.putIfAbsent(k, 'e')).toBe(true);
        seen.push(await current());
        for (let i = 1; i < seen.length; i++) expect(seen[i]).toBeGreaterThan(seen[i - 1]!);
      });
    });

    describe('add', () => {
      it('creates an absent counter at 0 and returns the sum after each add', async () => {
        expect(await index.add(key('n'), 5)).toBe(5);
        expect(await index.add(key('n'), -7)).toBe(-2);
        expect(await index.add(key('n'), 0)).toBe(-2);
        expect(await index.get(key('n'))).toEqual({ value: -2, version: 3 });
        expect(await index.add(key('m'), -1)).toBe(-1);
      });

      it('adds to a number written by put', async () => {
        await index.put(key('n'), 40);
        expect(await index.add(key('n'), 2)).toBe(42);
      });

      it('restarts an expired or deleted counter at 0', async () => {
        await index.put(key('n'), 10, { expiresAt: clock.now() + 5 });
        clock.advance(5);
        expect(await index.add(key('n'), 1)).toBe(1);
        await index.delete(key('n'));
        expect(await index.add(key('n'), 3)).toBe(3);
      });

      it('fails on an item that is not a number and leaves it unchanged', async () => {
        for (const value of ['7', { n: 1 }, [1], null, true]) {
          await index.put(key('x'), value);
          const before = await index.get(key('x'));
          await expect(index.add(key('x'), 1)).rejects.toThrow();
          expect(await index.get(key('x'))).toEqual(before);
        }
      });
    });

    describe('list', () => {
      // Mixed case, punctuation, and non-ASCII from 2-, 3- and 4-byte UTF-8 sequences (no empty
      // sk: DynamoDB refuses empty key attributes). '\uFF21'
      // (3 bytes, EF ..) sorts before '😀' (4 bytes, F0 ..) by UTF-8 bytes but after it by UTF-16
      // code units, which is how JavaScript's default sort would order them.
      const sks = ['b', 'a', 'B', 'A', 'ab', 'a-b', 'a/b', 'aB', 'Z', '~', 'é', 'e\u0301', '€', '\uFF21', '😀', 'z', '0'];
      const sorted = [...sks].sort(utf8Order);

      it('orders the partition by the UTF-8 bytes of sk, not by UTF-16 or locale', async () => {
        expect(sorted).not.toEqual([...sks].sort()); // the fixture really tells the orders apart
        for (const [i, sk] of sks.entries()) await index.put(key(sk), i);
        await index.put(key('a', 'other-partition'), 'x');
        await index.put(key('a', 'p2'), 'x');
        const listed = await index.list('p', { limit: 100 });
        expect(listed.map((e) => e.sk)).toEqual(sorted);
        for (const { sk, item } of listed) expect(item).toEqual({ value: sks.indexOf(sk), version: 1 });
      });

      it('returns [] for an empty or unknown partition', async () => {
        expect(await index.list('nothing-here', { limit: 10 })).toEqual([]);
      });

      it('starts strictly after `after`, whether or not that sk exists', async () => {
        for (const sk of sks) await index.put(key(sk), sk);
        const after = (a: string) => sorted.filter((sk) => utf8Order(sk, a) > 0);
        for (const a of ['a', 'aa', 'B', 'é', '\uFF21', '\uFFFF', '!']) {
          expect((await index.list('p', { after: a, limit: 100 })).map((e) => e.sk), `after ${a}`).toEqual(after(a));
        }
      });

      it('filters by prefix, alone and with `after`, taking % and _ literally', async () => {
        for (const sk of [...sks, 'x%1', 'x_1', 'xa1', 'xb%', 'éa', 'éb']) await index.put(key(sk), sk);
        const names = async (o: { prefix: string; after?: string }) => (await index.list('p', { ...o, limit: 100 })).map((e) => e.sk);
        expect(await names({ prefix: 'a' })).toEqual(['a', 'a-b', 'a/b', 'aB', 'ab']);
        expect(await names({ prefix: 'a', after: 'a-b' })).toEqual(['a/b', 'aB', 'ab']);
        expect(await names({ prefix: 'A' })).toEqual(['A']);
        expect(await names({ prefix: 'é' })).toEqual(['é', 'éa', 'éb']);
        expect(await names({ prefix: 'x%' })).toEqual(['x%1']);
        expect(await names({ prefix: 'x_' })).toEqual(['x_1']);
        expect(await names({ prefix: 'q' })).toEqual([]);
      });

      it('honours limit, and pages through the whole partition with after = last sk', async () => {
        for (const sk of sks) await index.put(key(sk), sk);
        expect((await index.list('p', { limit: 1 })).map((e) => e.sk)).toEqual(sorted.slice(0, 1));
        const paged: string[] = [];
        let after: string | undefined;
        for (;;) {
          const page = await index.list('p', after === undefined ? { limit: 4 } : { after, limit: 4 });
          expect(page.length).toBeLessThanOrEqual(4);
          paged.push(...page.map((e) => e.sk));
          if (page.length < 4) break;
          after = page.at(-1)!.sk;
        }
        expect(paged).toEqual(sorted);
      });

      it('skips expired and deleted items, and they do not count against limit', async () => {
        for (const sk of ['a', 'b', 'c', 'd', 'e', 'f']) await index.put(key(sk), sk);
        await index.put(key('a'), 'a', { expiresAt: clock.now() + 5 });
        await index.put(key('c'), 'c', { expiresAt: clock.now() + 5 });
        await index.put(key('e'), 'e', { expiresAt: clock.now() + TTL });
        await index.delete(key('b'));
        clock.advance(5);
        expect((await index.list('p', { limit: 2 })).map((e) => e.sk)).toEqual(['d', 'e']);
        expect((await index.list('p', { limit: 10 })).map((e) => e.sk)).toEqual(['d', 'e', 'f']);
        expect((await index.list('p', { limit: 10 }))[1]).toEqual({ sk: 'e', item: { value: 'e', version: 2, expiresAt: clock.now() - 5 + TTL } });
      });
    });

    // Only adapters without TTL deletion of their own have the ability (DynamoDB sweeps by `ttl`).
    describe('sweep (housekeeping)', () => {
      const WEEK = EXPIRED_ITEM_RETENTION_MS;

      it('erases items expired or deleted longer ago than asked, and nothing live', async (t) => {
        if (!index.sweep) return t.skip();
        await index.put(key('forever'), 1);
        await index.put(key('later'), 2, { expiresAt: clock.now() + 2 * WEEK });
        await index.put(key('expired'), 3, { expiresAt: clock.now() + 10 });
        await index.put(key('deleted'), 4);
        await index.delete(key('deleted'));
        await index.acquireLease(key('lease', 'leases'), 'A', 10);
        clock.advance(WEEK);
        expect(await index.sweep(WEEK)).toBe(0);
        clock.advance(11);
        expect(await index.sweep(WEEK)).toBe(3);
        expect(await index.sweep(WEEK)).toBe(0);
        expect((await index.list('p', { limit: 10 })).map((e) => e.sk)).toEqual(['forever', 'later']);
      });

      it('a key erased by it is written afresh; a lease acquired at an erased key gets a larger token', async (t) => {
        if (!index.sweep) return t.skip();
        await index.put(key('k'), 'old');
        await index.put(key('k'), 'older');
        await index.delete(key('k'));
        const first = await index.acquireLease(key('l', 'leases'), 'A', 10);
        if (!first.acquired) throw new Error('not acquired');
        clock.advance(WEEK + 11);
        await index.sweep(WEEK);
        expect(await index.putIfAbsent(key('k'), 'new')).toBe(true);
        expect(await index.get(key('k'))).toEqual({ value: 'new', version: 1 });
        const next = await index.acquireLease(key('l', 'leases'), 'B', 10);
        expect(next.acquired && next.lease.token).toBeGreaterThan(first.lease.token);
      });
    });

    leasesContract(subject);
    leaseStateContract(subject);
    racesContract(subject);
  });
}
