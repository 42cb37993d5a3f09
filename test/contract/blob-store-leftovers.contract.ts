import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { BlobStore, ObjectPage } from '../../src/ports/blob-store.js';
import { bytesOf, expectBytes, gatedStream, readAll, streamOf } from './blob-store-bodies.js';
import type { BlobStoreFixture } from './blob-store.contract.js';

/**
 * The BlobStore contract on what a write leaves behind (src/ports/blob-store.ts, `reclaim`):
 * a put never fails because a delete emptied its directory, and `reclaim` removes the
 * temporaries of writes that died once they are older than the grace, never an object and
 * never a write in progress. Run against every adapter; the `reclaim` cases skip stores
 * without temporaries (memory).
 */

const MiB = 1024 * 1024;
const HOUR = 60 * 60 * 1000;

export function blobStoreLeftoversContract(label: string, makeStore: () => BlobStoreFixture | Promise<BlobStoreFixture>) {
  describe(`BlobStore contract, leftovers: ${label}`, () => {
    let fixture: BlobStoreFixture;
    let store: BlobStore;
    const leftovers = async () => (await fixture.leftovers?.()) ?? [];
    const keysOf = (page: ObjectPage) => page.keys.map((o) => o.key);

    beforeEach(async () => {
      fixture = await makeStore();
      store = fixture.store;
    });

    afterEach(async () => {
      await fixture.cleanup?.();
    });

    it('puts into a directory whose last object is being deleted, every time', async () => {
      // Each round deletes the only objects of a directory while new ones are put beside them.
      for (let round = 0; round < 20; round++) {
        const dir = `uploads/u${round % 3}/`;
        await Promise.all([0, 1].map((i) => store.put(`${dir}old-${i}`, streamOf(bytesOf(1, 10)), 10)));
        await Promise.all([
          store.delete(`${dir}old-0`),
          store.put(`${dir}new-${round}`, streamOf(bytesOf(2, 100)), 100, { scratch: true }),
          store.delete(`${dir}old-1`),
        ]);
        expect(await store.stat(`${dir}new-${round}`), `round ${round}`).toMatchObject({ size: 100 });
        await store.delete(`${dir}new-${round}`);
      }
      expect(await store.list('', { limit: 10 })).toEqual({ keys: [] });
      expect(await leftovers()).toEqual([]);
    });

    it('reclaims what a write that died left, once older than the grace; never an object or a write in progress', async ({ skip }) => {
      if (!store.reclaim || !fixture.abandon) return skip();
      await store.put('blobs/kept', streamOf(bytesOf(1, 1000)), 1000);
      await fixture.abandon('blobs/dead');
      expect(await leftovers()).toHaveLength(1);
      // The dead write is nowhere to be seen, so nothing but reclaim can find it.
      expect(await store.stat('blobs/dead')).toBeUndefined();
      expect(await store.get('blobs/dead')).toBeUndefined();
      expect(keysOf(await store.list('', { limit: 10 }))).toEqual(['blobs/kept']);

      // A write in progress, past one S3 part so that it is a multipart upload there.
      const live = bytesOf(3, 6 * MiB);
      const gate = gatedStream(live, 5 * MiB + 1000);
      const putting = store.put('blobs/live', gate.stream, live.length);
      await gate.halfway;
      // Everything is younger than the grace: nothing goes.
      expect(await store.reclaim(HOUR)).toMatchObject({ temporary: 0 });
      expect((await leftovers()).length).toBeGreaterThanOrEqual(1);
      gate.release();
      await putting;
      expectBytes(await readAll((await store.get('blobs/live'))!.body), live);

      // With no grace (a second later, for stores whose clock has whole seconds), the dead write goes and nothing else.
      await new Promise((r) => setTimeout(r, 1100));
      expect(await store.reclaim(0)).toMatchObject({ temporary: 1 });
      expect(await leftovers()).toEqual([]);
      expect(keysOf(await store.list('', { limit: 10 }))).toEqual(['blobs/kept', 'blobs/live']);
      expect(await store.stat('blobs/kept')).toMatchObject({ size: 1000 });
      expect(await store.reclaim(0)).toMatchObject({ temporary: 0 });
    });
  });
}
