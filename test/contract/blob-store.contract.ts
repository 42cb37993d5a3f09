import { randomBytes } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { BlobStore, ListedObject, ObjectPage } from '../../src/ports/blob-store.js';
import { lexical } from '../support/paging.js';
import { bytesOf, concat, equal, expectBytes, failingStream, gatedStream, readAll, slowStream, streamOf } from './blob-store-bodies.js';

/**
 * The BlobStore contract (src/ports/blob-store.ts), run against every adapter: misses are
 * undefined, ranges are exact, and a put is atomic — readers see the old object or the whole
 * new one, and a body that breaks off or has the wrong size leaves nothing behind. `list`
 * pages through keys in byte order, by plain string prefix, and shows only finished writes.
 */
export interface BlobStoreFixture {
  store: BlobStore;
  /** Names of temporary files the store has left behind (a store without any returns []). */
  leftovers?: () => Promise<string[]>;
  /**
   * Leaves behind what a process killed in the middle of a write to `key` leaves: a partial
   * temporary (Fs: a file under .tmp; S3: a multipart upload with a part and no completion).
   * Stores without temporaries have none.
   */
  abandon?: (key: string) => Promise<void>;
  cleanup?: () => void | Promise<void>;
}

export interface BlobStoreTraits {
  /** The store streams reads from its backing storage instead of buffering whole objects. */
  streamsReads?: boolean;
  /** stat and list report `lastModified` (GC retention depends on it). */
  reportsLastModified?: boolean;
}

const MiB = 1024 * 1024;

export function blobStoreContract(
  label: string,
  makeStore: () => BlobStoreFixture | Promise<BlobStoreFixture>,
  traits: BlobStoreTraits = {},
) {
  describe(`BlobStore contract: ${label}`, () => {
    let fixture: BlobStoreFixture;
    let store: BlobStore;
    const leftovers = async () => (await fixture.leftovers?.()) ?? [];

    beforeEach(async () => {
      fixture = await makeStore();
      store = fixture.store;
    });

    afterEach(async () => {
      await fixture.cleanup?.();
    });

    describe('stat and get', () => {
      it('return undefined for a missing key', async () => {
        expect(await store.stat('missing')).toBeUndefined();
        expect(await store.get('missing')).toBeUndefined();
        expect(await store.get('missing', { offset: 0, length: 1 })).toBeUndefined();
        expect(await store.stat('no/such/dir/key')).toBeUndefined();
      });

      it('treat a key that only prefixes other keys as absent (keys are flat)', async () => {
        await store.put('blobs/sha256/ab/abcdef', streamOf(bytesOf(1, 10)), 10);
        for (const key of ['blobs', 'blobs/sha256', 'blobs/sha256/ab']) {
          expect(await store.stat(key), key).toBeUndefined();
          expect(await store.get(key), key).toBeUndefined();
          expect(await store.get(key, { offset: 0, length: 1 }), key).toBeUndefined();
          await store.delete(key);
        }
        expect(await store.stat('blobs/sha256/ab/abcdef')).toMatchObject({ size: 10 });
      });

      it('return the size and the whole object after a put, under nested keys too', async () => {
        const bytes = randomBytes(1000);
        expect(await store.put('blobs/sha256/ab/abcdef', streamOf(bytes), bytes.length)).toEqual({ size: 1000 });
        expect(await store.stat('blobs/sha256/ab/abcdef')).toMatchObject({ size: 1000 });
        const got = await store.get('blobs/sha256/ab/abcdef');
        expect(got?.size).toBe(1000);
        expectBytes(await readAll(got!.body), bytes);
      });

      it('store an empty object', async () => {
        expect(await store.put('empty', streamOf(new Uint8Array(0)), 0)).toEqual({ size: 0 });
        expect(await store.stat('empty')).toMatchObject({ size: 0 });
        const got = (await store.get('empty'))!;
        expect(got.size).toBe(0);
        expect((await readAll(got.body)).byteLength).toBe(0);
      });

      it('accept a put without a size', async () => {
        const bytes = randomBytes(300);
        expect(await store.put('k', streamOf(bytes, 7))).toEqual({ size: 300 });
        expectBytes(await readAll((await store.get('k'))!.body), bytes);
      });

      it('serve exact ranges, reporting the size of the whole object', async () => {
        const bytes = randomBytes(10_000);
        await store.put('k', streamOf(bytes, 1024), bytes.length);
        const cases = [
          { offset: 0, length: 10_000 },
          { offset: 0, length: 1 },
          { offset: 1234, length: 4321 },
          { offset: 9_999, length: 1 },
          { offset: 5_000, length: 5_000 },
        ];
        for (const range of cases) {
          const got = (await store.get('k', range))!;
          expect(got.size, JSON.stringify(range)).toBe(10_000);
          expectBytes(await readAll(got.body), bytes.subarray(range.offset, range.offset + range.length), JSON.stringify(range));
        }
      });

      it('serve a zero-length range as an empty body', async () => {
        await store.put('k', streamOf(randomBytes(100)), 100);
        for (const offset of [0, 50, 100]) {
          const got = (await store.get('k', { offset, length: 0 }))!;
          expect(got.size).toBe(100);
          expect((await readAll(got.body)).byteLength, `offset ${offset}`).toBe(0);
        }
      });
    });

    describe('put', () => {
      it('replaces an existing object', async () => {
        await store.put('k', streamOf(bytesOf(1, 5000)), 5000);
        await store.put('k', streamOf(bytesOf(2, 10)), 10);
        expect(await store.stat('k')).toMatchObject({ size: 10 });
        expectBytes(await readAll((await store.get('k'))!.body), bytesOf(2, 10));
        expect(await leftovers()).toEqual([]);
      });

      it('takes a body of many small chunks', async () => {
        const bytes = randomBytes(64 * 1024 + 3);
        await store.put('k', streamOf(bytes, 97), bytes.length);
        expectBytes(await readAll((await store.get('k'))!.body), bytes);
        // And one of several MiB, in chunks that straddle any batching a store does.
        const large = randomBytes(3 * 1024 * 1024 + 517);
        await store.put('k2', streamOf(large, 200_001));
        expectBytes(await readAll((await store.get('k2'))!.body), large);
      });

      it('rejects a body that errors midway and leaves nothing visible or behind', async () => {
        const boom = new Error('connection reset');
        await expect(store.put('k', failingStream(3, 4096, boom), 5 * 4096)).rejects.toThrow();
        expect(await store.stat('k')).toBeUndefined();
        expect(await store.get('k')).toBeUndefined();
        expect(await leftovers()).toEqual([]);
      });

      it('keeps the previous object whole when a replacing body errors', async () => {
        const old = bytesOf(7, 3000);
        await store.put('k', streamOf(old), old.length);
        await expect(store.put('k', failingStream(2, 4096, new Error('broken pipe')))).rejects.toThrow();
        expect(await store.stat('k')).toMatchObject({ size: 3000 });
        expectBytes(await readAll((await store.get('k'))!.body), old);
        expect(await leftovers()).toEqual([]);
      });

      it('rejects a body shorter or longer than the declared size and leaves nothing', async () => {
        await expect(store.put('short', streamOf(randomBytes(99)), 100)).rejects.toThrow();
        await expect(store.put('long', streamOf(randomBytes(101), 10), 100)).rejects.toThrow();
        expect(await store.stat('short')).toBeUndefined();
        expect(await store.stat('long')).toBeUndefined();
        const old = bytesOf(3, 100);
        await store.put('k', streamOf(old), 100);
        await expect(store.put('k', streamOf(randomBytes(50)), 100)).rejects.toThrow();
        expectBytes(await readAll((await store.get('k'))!.body), old);
        expect(await leftovers()).toEqual([]);
      });
    });

    describe('delete', () => {
      it('removes the object and is idempotent', async () => {
        await store.put('a/b', streamOf(bytesOf(1, 10)), 10);
        await store.put('a/c', streamOf(bytesOf(2, 10)), 10);
        await store.delete('a/b');
        expect(await store.stat('a/b')).toBeUndefined();
        expect(await store.get('a/b')).toBeUndefined();
        await store.delete('a/b');
        await store.delete('never/written');
        expect(await store.stat('a/c')).toMatchObject({ size: 10 });
      });
    });

    describe('move (optional)', () => {
      it('renames an object to a new key', async ({ skip }) => {
        if (!store.move) return skip();
        await store.put('uploads/u1', streamOf(bytesOf(4, 100)), 100);
        await store.move('uploads/u1', 'blobs/b1');
        expect(await store.stat('uploads/u1')).toBeUndefined();
        expectBytes(await readAll((await store.get('blobs/b1'))!.body), bytesOf(4, 100));
      });

      it('replaces the target', async ({ skip }) => {
        if (!store.move) return skip();
        await store.put('from', streamOf(bytesOf(5, 10)), 10);
        await store.put('to', streamOf(bytesOf(6, 1000)), 1000);
        await store.move('from', 'to');
        expect(await store.stat('from')).toBeUndefined();
        expect(await store.stat('to')).toMatchObject({ size: 10 });
        expectBytes(await readAll((await store.get('to'))!.body), bytesOf(5, 10));
      });
    });

    describe('compose (optional)', () => {
      /** Puts each part at `${prefix}${i}` and returns the keys, in order. */
      const putParts = async (prefix: string, parts: Uint8Array[]) => {
        const keys = parts.map((_, i) => `${prefix}${String(i).padStart(4, '0')}`);
        for (const [i, key] of keys.entries()) await store.put(key, streamOf(parts[i]!), parts[i]!.byteLength);
        return keys;
      };
      const expectComposed = async (key: string, parts: Uint8Array[]) => {
        const whole = concat(parts);
        expect(await store.stat(key)).toMatchObject({ size: whole.byteLength });
        const got = (await store.get(key))!;
        expect(got.size).toBe(whole.byteLength);
        expectBytes(await readAll(got.body), whole);
      };

      it('writes the concatenation of several parts and leaves the parts as they are', async ({ skip }) => {
        if (!store.compose) return skip();
        const parts = [randomBytes(1000), randomBytes(70_000), randomBytes(1), randomBytes(4096)];
        const keys = await putParts('fills/f1/', parts);
        expect(await store.compose(keys, 'blobs/b1')).toMatchObject({ size: 75_097 });
        await expectComposed('blobs/b1', parts);
        for (const [i, key] of keys.entries()) expectBytes(await readAll((await store.get(key))!.body), parts[i]!, key);
        expect(await leftovers()).toEqual([]);
      });

      it('takes zero-length and small parts, and no parts at all', async ({ skip }) => {
        if (!store.compose) return skip();
        const parts = [new Uint8Array(0), randomBytes(3), new Uint8Array(0), randomBytes(1), new Uint8Array(0)];
        const keys = await putParts('fills/f2/', parts);
        expect(await store.compose(keys, 'blobs/small')).toMatchObject({ size: 4 });
        await expectComposed('blobs/small', parts);
        const empty = [keys[0]!, keys[2]!];
        expect(await store.compose(empty, 'blobs/empty')).toMatchObject({ size: 0 });
        await expectComposed('blobs/empty', []);
        expect(await store.compose([], 'blobs/none')).toMatchObject({ size: 0 });
        await expectComposed('blobs/none', []);
        expect(await store.compose([keys[1]!], 'blobs/one')).toMatchObject({ size: 3 });
        await expectComposed('blobs/one', [parts[1]!]);
      });

      it('composes parts of 5 MiB and more, alone and mixed with small ones', async ({ skip }) => {
        if (!store.compose) return skip();
        // S3's multipart minimum is 5 MiB for all parts but the last: these cross it every way.
        const cases: Array<[string, number[]]> = [
          ['large', [5 * MiB, 6 * MiB + 1, 5 * MiB]],
          ['mixed', [MiB, 6 * MiB, 5 * MiB, 3 * MiB, 2 * MiB + 7, 7 * MiB, 2]],
          ['small-first', [4 * MiB, 1, 9 * MiB]],
          ['large-then-tiny', [5 * MiB, 0, 1, 1]],
        ];
        for (const [name, sizes] of cases) {
          const parts = sizes.map((n) => randomBytes(n));
          const keys = await putParts(`fills/${name}/`, parts);
          const total = sizes.reduce((a, b) => a + b, 0);
          expect(await store.compose(keys, `blobs/${name}`), name).toMatchObject({ size: total });
          await expectComposed(`blobs/${name}`, parts);
          // A range across a part boundary.
          const at = sizes[0]! - 10;
          expectBytes(
            await readAll((await store.get(`blobs/${name}`, { offset: at, length: 20 }))!.body),
            concat(parts).subarray(at, at + 20),
            name,
          );
        }
        expect(await leftovers()).toEqual([]);
      });

      it('replaces an existing object atomically: readers see the old or the new one whole', async ({ skip }) => {
        if (!store.compose) return skip();
        const old = bytesOf(9, 300_000);
        await store.put('blobs/b', streamOf(old), old.length);
        const parts = [bytesOf(1, 100_000), bytesOf(2, 150_000), bytesOf(3, 1)];
        const keys = await putParts('fills/f3/', parts);
        const composing = store.compose(keys, 'blobs/b');
        const reads = Array.from({ length: 4 }, () => store.get('blobs/b').then(async (got) => ({ size: got!.size, bytes: await readAll(got!.body) })));
        await composing;
        const whole = concat(parts);
        for (const { size, bytes } of await Promise.all(reads)) {
          expect(equal(bytes, old) || equal(bytes, whole), `a read of ${bytes.length} bytes is neither value`).toBe(true);
          expect(size).toBe(bytes.length);
        }
        await expectComposed('blobs/b', parts);
      });

      it('rejects a missing part, writing nothing: the target stays absent or keeps its object', async ({ skip }) => {
        if (!store.compose) return skip();
        const keys = await putParts('fills/f4/', [randomBytes(100), randomBytes(6 * MiB)]);
        for (const parts of [['fills/f4/missing', ...keys], [...keys, 'fills/f4/missing'], [keys[0]!, 'fills/f4/missing', keys[1]!]]) {
          await expect(store.compose(parts, 'blobs/absent'), parts.join()).rejects.toThrow();
          expect(await store.stat('blobs/absent')).toBeUndefined();
        }
        const old = bytesOf(4, 1234);
        await store.put('blobs/kept', streamOf(old), old.length);
        await expect(store.compose([keys[1]!, 'fills/f4/missing'], 'blobs/kept')).rejects.toThrow();
        expectBytes(await readAll((await store.get('blobs/kept'))!.body), old);
        expect(await store.stat(keys[0]!)).toMatchObject({ size: 100 });
        expect(await leftovers()).toEqual([]);
      });

      it('concurrent composes onto one key end with one whole result', async ({ skip }) => {
        if (!store.compose) return skip();
        const sets = await Promise.all(
          Array.from({ length: 4 }, async (_, i) => {
            const parts = [bytesOf(i * 2 + 1, 40_000 + i), bytesOf(i * 2 + 2, 30_000)];
            return { parts, keys: await putParts(`fills/c${i}/`, parts) };
          }),
        );
        await Promise.all(sets.map(({ keys }) => store.compose!(keys, 'blobs/raced')));
        const bytes = await readAll((await store.get('blobs/raced'))!.body);
        const match = sets.findIndex(({ parts }) => equal(concat(parts), bytes));
        expect(match, 'the stored object is one of the composed values').toBeGreaterThanOrEqual(0);
        expect(await store.stat('blobs/raced')).toMatchObject({ size: bytes.length });
        expect(await leftovers()).toEqual([]);
      });
    });

    describe('parts of a fill', () => {
      const fill = `fills/sha256/ab/${'ab12'.repeat(16)}/`;
      /** A part's key: its byte range, first and last offset, as 16 hex digits each. */
      const partKey = (first: number, last: number) => `${fill}${hex16(first)}-${hex16(last)}`;

      it('streams a stored part while another part is being written', async () => {
        const first = bytesOf(1, 300_000);
        await store.put(partKey(0, first.length - 1), streamOf(first), first.length);
        const next = bytesOf(2, 200_000);
        const gate = gatedStream(next, 100_000);
        const putting = store.put(partKey(first.length, first.length + next.length - 1), gate.stream, next.length);
        await gate.halfway;
        const got = (await store.get(partKey(0, first.length - 1)))!;
        expect(got.size).toBe(first.length);
        expectBytes(await readAll(got.body), first);
        gate.release();
        await putting;
        expectBytes(await readAll((await store.get(partKey(first.length, first.length + next.length - 1)))!.body), next);
      });

      it('lists part keys in numeric order of their offsets', async () => {
        // Offsets whose decimal and hex digit counts differ: fixed-width keys list numerically.
        const ranges = [
          [0, 7],
          [8, 15],
          [16, 255],
          [256, 4095],
          [4096, 0x1_0000_0000],
          [0x1_0000_0001, 0x1_0000_0008],
        ] as const;
        for (const [first, last] of [...ranges].reverse()) await store.put(partKey(first, last), streamOf(bytesOf(1, 8)), 8);
        await store.put(`${fill.slice(0, -1)}-other/0000000000000000-0000000000000007`, streamOf(bytesOf(1, 8)), 8);
        expect(partKey(0, 7)).toBe(`${fill}0000000000000000-0000000000000007`);
        const listed = (await store.list(fill, { limit: 100 })).keys.map((o) => o.key);
        expect(listed).toEqual(ranges.map(([first, last]) => partKey(first, last)));
        expect((await listAll(store, fill, 2)).map((o) => o.key)).toEqual(listed);
      });
    });

    describe('list', () => {
      /** Writes `sizes` (key -> size) in the given order, each object `size` bytes. */
      const putAll = async (sizes: Record<string, number>) => {
        for (const [key, size] of Object.entries(sizes)) await store.put(key, streamOf(bytesOf(1, size)), size);
      };
      const keysOf = (page: ObjectPage) => page.keys.map((o) => o.key);

      it('lists an empty store, and a prefix nothing has, as an empty last page', async () => {
        expect(await store.list('', { limit: 10 })).toEqual({ keys: [] });
        await putAll({ 'blobs/sha256/ab/abcd': 1 });
        for (const prefix of ['uploads/', 'blobs/sha512/', 'blobs/sha256/ab/abce', 'c', 'blobs/sha256/ab/abcd/']) {
          expect(await store.list(prefix, { limit: 10 }), prefix).toEqual({ keys: [] });
        }
      });

      it('returns keys in ascending byte order, with their sizes', async () => {
        // '-' < '.' < '/' < '0' < 'A' < '_' < 'a': a directory's keys fall between its siblings.
        const sizes = {
          'x/y/z': 3,
          'x/y-z': 1,
          'x/y0': 4,
          'x/y.z': 2,
          'x/Z': 5,
          'x/y_': 6,
          'a/b': 7,
          'a-b': 8,
          'a.b': 9,
          B: 10,
          '0': 11,
          'blobs/sha256/ab/abcdef': 12,
          'uploads/u1/0-n': 0,
        };
        await putAll(sizes);
        const page = await store.list('', { limit: 100 });
        expect(page.next).toBeUndefined();
        const expected = Object.keys(sizes).sort(lexical);
        expect(keysOf(page)).toEqual(expected);
        expect(page.keys.map((o) => o.size)).toEqual(expected.map((k) => sizes[k as keyof typeof sizes]));
        expect(keysOf(await store.list('x/', { limit: 100 }))).toEqual(['x/Z', 'x/y-z', 'x/y.z', 'x/y/z', 'x/y0', 'x/y_']);
      });

      it('filters by plain string prefix, across and within path segments', async () => {
        await putAll({
          'uploads/u1/0-a': 1,
          'uploads/u1/1-b': 1,
          'uploads/u10/0-c': 1,
          'uploads/u2/0-d': 1,
          'uploads-other': 1,
          'blobs/sha256/ab/abcd': 1,
          'blobs/sha256/ac/acde': 1,
          'blobs/sha256/b0/b0ff': 1,
          'blobs/sha512/ab/ab00': 1,
        });
        const cases: Array<[string, string[]]> = [
          ['uploads/u1/', ['uploads/u1/0-a', 'uploads/u1/1-b']],
          ['uploads/u1', ['uploads/u1/0-a', 'uploads/u1/1-b', 'uploads/u10/0-c']],
          ['uploads/u1/0', ['uploads/u1/0-a']],
          ['uploads/u1/0-a', ['uploads/u1/0-a']],
          ['uploads/', ['uploads/u1/0-a', 'uploads/u1/1-b', 'uploads/u10/0-c', 'uploads/u2/0-d']],
          ['uploads', ['uploads-other', 'uploads/u1/0-a', 'uploads/u1/1-b', 'uploads/u10/0-c', 'uploads/u2/0-d']],
          ['blobs/sha256/a', ['blobs/sha256/ab/abcd', 'blobs/sha256/ac/acde']],
          ['blobs/sha256/ab', ['blobs/sha256/ab/abcd']],
          ['blobs/sha256/', ['blobs/sha256/ab/abcd', 'blobs/sha256/ac/acde', 'blobs/sha256/b0/b0ff']],
          ['blobs/', ['blobs/sha256/ab/abcd', 'blobs/sha256/ac/acde', 'blobs/sha256/b0/b0ff', 'blobs/sha512/ab/ab00']],
        ];
        for (const [prefix, expected] of cases) {
          const page = await store.list(prefix, { limit: 100 });
          expect(keysOf(page), prefix).toEqual(expected);
          expect(page.next, prefix).toBeUndefined();
        }
      });

      it('pages with after and limit until next is undefined', async () => {
        const inside = Array.from({ length: 23 }, (_, i) => {
          const hex = (i * 37 + 11).toString(16).padStart(2, '0') + 'beef';
          return `blobs/sha256/${hex.slice(0, 2)}/${hex}`;
        });
        const outside = ['blob', 'blobs-', 'blobs.', 'blobt/x', 'a/z', 'uploads/u/0-n'];
        for (const key of [...inside, ...outside].reverse()) await store.put(key, streamOf(bytesOf(2, 1)), 1);
        const expected = [...inside].sort(lexical);
        for (const limit of [1, 4, 22, 23]) {
          const listed = await listAll(store, 'blobs/', limit);
          expect(listed.map((o) => o.key), `limit ${limit}`).toEqual(expected);
        }
        const whole = await store.list('blobs/', { limit: 24 });
        expect(keysOf(whole)).toEqual(expected);
        expect(whole.next).toBeUndefined();
        // after need not be a key, nor lie inside the prefix.
        const mid = 'blobs/sha256/7';
        expect(keysOf(await store.list('blobs/', { after: mid, limit: 100 }))).toEqual(expected.filter((k) => lexical(k, mid) > 0));
        expect(keysOf(await store.list('blobs/', { after: expected[5], limit: 3 }))).toEqual(expected.slice(6, 9));
        expect(keysOf(await store.list('blobs/', { after: 'a', limit: 100 }))).toEqual(expected);
        expect(keysOf(await store.list('blobs/', { after: 'blobs/', limit: 100 }))).toEqual(expected);
        expect(await store.list('blobs/', { after: 'blobs0', limit: 100 })).toEqual({ keys: [] });
        expect(await store.list('blobs/', { after: expected.at(-1), limit: 100 })).toEqual({ keys: [] });
      });

      it('does not list deleted keys', async () => {
        await putAll({ 'uploads/u1/0-a': 5, 'uploads/u1/1-b': 6, 'uploads/u2/0-c': 7 });
        await store.delete('uploads/u1/0-a');
        await store.delete('uploads/u1/1-b');
        expect(keysOf(await store.list('uploads/', { limit: 10 }))).toEqual(['uploads/u2/0-c']);
        expect(await store.list('uploads/u1/', { limit: 10 })).toEqual({ keys: [] });
        await store.delete('uploads/u2/0-c');
        expect(await store.list('', { limit: 10 })).toEqual({ keys: [] });
      });

      it('does not list a put in progress, nor a put that failed', async () => {
        await putAll({ 'uploads/u1/0-a': 10 });
        const gate = gatedStream(bytesOf(3, 200_000), 100_000);
        const putting = store.put('uploads/u1/1-b', gate.stream, 200_000);
        await gate.halfway;
        await expect(store.put('uploads/u1/2-c', failingStream(2, 4096, new Error('reset')))).rejects.toThrow();
        expect(keysOf(await store.list('', { limit: 10 }))).toEqual(['uploads/u1/0-a']);
        gate.release();
        await putting;
        expect(keysOf(await store.list('', { limit: 10 }))).toEqual(['uploads/u1/0-a', 'uploads/u1/1-b']);
        expect(await leftovers()).toEqual([]);
      });

      if (traits.reportsLastModified) {
        it('reports lastModified in epoch ms from stat and list, non-decreasing for later writes', async () => {
          const before = Date.now();
          await putAll({ 'k/first': 1 });
          await new Promise((r) => setTimeout(r, 20));
          await putAll({ 'k/second': 2 });
          const first = (await store.stat('k/first'))!.lastModified!;
          const second = (await store.stat('k/second'))!.lastModified!;
          // The store's clock: allow for skew and for S3's whole seconds, but not for seconds-as-ms.
          for (const t of [first, second]) {
            expect(Number.isInteger(t)).toBe(true);
            expect(t).toBeGreaterThan(before - 60_000);
            expect(t).toBeLessThan(Date.now() + 60_000);
          }
          expect(second).toBeGreaterThanOrEqual(first);
          const listed = (await store.list('k/', { limit: 10 })).keys;
          expect(listed.map((o) => o.key)).toEqual(['k/first', 'k/second']);
          // stat may round to whole seconds (S3's Last-Modified header); list may not.
          expect(Math.abs(listed[0]!.lastModified! - first)).toBeLessThan(1000);
          expect(Math.abs(listed[1]!.lastModified! - second)).toBeLessThan(1000);
          expect(listed[1]!.lastModified!).toBeGreaterThanOrEqual(listed[0]!.lastModified!);
          // Replacing an object makes it at least as new as everything written before.
          await new Promise((r) => setTimeout(r, 20));
          await putAll({ 'k/first': 3 });
          expect((await store.stat('k/first'))!.lastModified!).toBeGreaterThanOrEqual(second);
          const again = (await store.list('k/', { limit: 10 })).keys;
          expect(again[0]!.lastModified!).toBeGreaterThanOrEqual(listed[1]!.lastModified!);
          if (store.move) {
            await store.move('k/second', 'k/third');
            expect((await store.stat('k/third'))!.lastModified!).toBeGreaterThanOrEqual(second);
          }
        });
      }
    });

    describe('concurrency', () => {
      it('concurrent puts to one key end with one complete value, never a mix', async () => {
        // Each writer's body arrives in chunks separated by macrotask gaps, so the writes interleave.
        const values = Array.from({ length: 8 }, (_, i) => bytesOf(i + 1, 50_000 + i * 1000));
        await Promise.all(values.map((v) => store.put('k', slowStream(v, 8192), v.length)));
        const got = (await store.get('k'))!;
        const bytes = await readAll(got.body);
        const match = values.findIndex((v) => equal(v, bytes));
        expect(match, 'the stored object is one of the written values').toBeGreaterThanOrEqual(0);
        expect(got.size).toBe(values[match]!.length);
        expect(await leftovers()).toEqual([]);
      });

      it('a put in progress is invisible until it completes', async () => {
        const old = bytesOf(1, 100_000);
        const next = bytesOf(2, 200_000);
        await store.put('k', streamOf(old), old.length);
        const gate = gatedStream(next, 100_000);
        const putting = store.put('k', gate.stream, next.length);
        await gate.halfway;
        expect(await store.stat('k')).toMatchObject({ size: old.length });
        expectBytes(await readAll((await store.get('k'))!.body), old);
        gate.release();
        await putting;
        expectBytes(await readAll((await store.get('k'))!.body), next);
      });

      it('a read overlapping a replace returns the old or the new object whole', async () => {
        const a = bytesOf(0xaa, 3 * 256 * 1024);
        const b = bytesOf(0xbb, 2 * 256 * 1024 + 17);
        await store.put('k', streamOf(a), a.length);
        // A body obtained before the replace and read after it.
        const early = (await store.get('k'))!;
        await store.put('k', streamOf(b), b.length);
        expectBytes(await readAll(early.body), a);
        // Reads racing a series of replaces.
        const reads: Array<Promise<{ size: number; bytes: Uint8Array }>> = [];
        const writes: Array<Promise<unknown>> = [];
        for (let i = 0; i < 6; i++) {
          const v = i % 2 ? b : a;
          writes.push(store.put('k', slowStream(v, 64 * 1024), v.length));
          reads.push(store.get('k').then(async (got) => ({ size: got!.size, bytes: await readAll(got!.body) })));
        }
        await Promise.all(writes);
        for (const { size, bytes } of await Promise.all(reads)) {
          expect(equal(bytes, a) || equal(bytes, b), `a read of ${bytes.length} bytes is neither value`).toBe(true);
          expect(size).toBe(bytes.length);
        }
      });
    });

    if (traits.streamsReads) {
      it('streams a multi-MiB object in several chunks', async () => {
        const bytes = randomBytes(8 * MiB);
        await store.put('big', streamOf(bytes, MiB), bytes.length);
        const got = (await store.get('big'))!;
        expect(got.size).toBe(8 * MiB);
        const chunks: Uint8Array[] = [];
        for await (const chunk of got.body as unknown as AsyncIterable<Uint8Array>) chunks.push(chunk);
        expect(chunks.length).toBeGreaterThan(1);
        expect(Math.max(...chunks.map((c) => c.byteLength))).toBeLessThan(8 * MiB);
        expect(Buffer.concat(chunks).equals(bytes)).toBe(true);
        // A range of a big object streams too.
        const range = (await store.get('big', { offset: MiB + 1, length: 4 * MiB }))!;
        const ranged: Uint8Array[] = [];
        for await (const chunk of range.body as unknown as AsyncIterable<Uint8Array>) ranged.push(chunk);
        expect(ranged.length).toBeGreaterThan(1);
        expect(Buffer.concat(ranged).equals(bytes.subarray(MiB + 1, 5 * MiB + 1))).toBe(true);
      });
    }
  });
}

/**
 * Every object under `prefix`, paged `limit` at a time, checking each page: at most `limit`
 * keys, all under the prefix, strictly ascending and after the previous page.
 */
async function listAll(store: BlobStore, prefix: string, limit: number): Promise<ListedObject[]> {
  const all: ListedObject[] = [];
  let after: string | undefined;
  for (let pages = 0; ; pages++) {
    expect(pages, 'listing ends').toBeLessThan(1000);
    const page = await store.list(prefix, after === undefined ? { limit } : { after, limit });
    expect(page.keys.length).toBeLessThanOrEqual(limit);
    for (const o of page.keys) {
      expect(o.key.startsWith(prefix), o.key).toBe(true);
      if (all.length) expect(lexical(o.key, all.at(-1)!.key), o.key).toBeGreaterThan(0);
    }
    all.push(...page.keys);
    if (page.next === undefined) return all;
    after = page.next;
  }
}

function hex16(n: number): string {
  return n.toString(16).padStart(16, '0');
}
