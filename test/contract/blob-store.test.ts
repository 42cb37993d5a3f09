import { mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FsBlobStore } from '../../src/adapters/local/fs-blob-store.js';
import { MemoryBlobStore } from '../../src/adapters/memory/blob-store.js';
import { MAX_LIST_KEYS } from '../../src/ports/blob-store.js';
import { TestClock } from '../support/clock.js';
import { blobStoreContract } from './blob-store.contract.js';

blobStoreContract('MemoryBlobStore', () => ({ store: new MemoryBlobStore() }), { reportsLastModified: true });

blobStoreContract(
  'FsBlobStore',
  () => {
    const root = mkdtempSync(join(tmpdir(), 'outpost-blobs-'));
    return {
      store: new FsBlobStore(root),
      // Writes stage in <root>/.tmp and are renamed into place; nothing may stay there.
      leftovers: async () => {
        try {
          return readdirSync(join(root, '.tmp'));
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
          throw err;
        }
      },
      cleanup: () => rmSync(root, { recursive: true, force: true }),
    };
  },
  { streamsReads: true, reportsLastModified: true },
);

const bytes = (text: string) => new Response(text).body!;

describe('MemoryBlobStore times and limits', () => {
  it('records write times from the injected clock; a move counts as a write', async () => {
    const clock = new TestClock();
    const store = new MemoryBlobStore(clock);
    await store.put('uploads/u/0-a', bytes('abc'));
    clock.advance(60_000);
    await store.put('blobs/x', bytes('x'));
    expect(await store.stat('uploads/u/0-a')).toEqual({ size: 3, lastModified: clock.time - 60_000 });
    clock.advance(60_000);
    await store.move('uploads/u/0-a', 'blobs/y');
    expect((await store.list('blobs/', { limit: 10 })).keys).toEqual([
      { key: 'blobs/x', size: 1, lastModified: clock.time - 60_000 },
      { key: 'blobs/y', size: 3, lastModified: clock.time },
    ]);
  });

  it(`caps a page at MAX_LIST_KEYS (${MAX_LIST_KEYS})`, async () => {
    const store = new MemoryBlobStore();
    for (let i = 0; i <= MAX_LIST_KEYS; i++) await store.put(`k/${String(i).padStart(5, '0')}`, bytes(''));
    const page = await store.list('k/', { limit: 5 * MAX_LIST_KEYS });
    expect(page.keys).toHaveLength(MAX_LIST_KEYS);
    expect(page.next).toBe('k/00999');
    expect((await store.list('k/', { after: page.next, limit: MAX_LIST_KEYS })).keys.map((o) => o.key)).toEqual(['k/01000']);
  });
});

describe('FsBlobStore keys', () => {
  let root: string;
  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'outpost-blobs-'));
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  it('gives a moved object the time of the move, not of its first write', async () => {
    const store = new FsBlobStore(root);
    await store.put('uploads/u/0-a', bytes('abc'));
    const old = new Date('2020-01-01T00:00:00Z');
    utimesSync(join(root, 'uploads/u/0-a'), old, old);
    expect((await store.stat('uploads/u/0-a'))?.lastModified).toBe(old.getTime());
    const before = Date.now();
    await store.move('uploads/u/0-a', 'blobs/y');
    expect((await store.stat('blobs/y'))!.lastModified!).toBeGreaterThanOrEqual(before - 1000);
  });

  it('lists neither its staging directory nor names it could not have written, and follows links as stat does', async () => {
    const store = new FsBlobStore(root);
    await store.put('blobs/a', bytes('a'));
    mkdirSync(join(root, '.tmp'), { recursive: true });
    writeFileSync(join(root, '.tmp', 'in-progress'), 'partial');
    writeFileSync(join(root, 'blobs', 'with space'), 'x');
    writeFileSync(join(root, 'blobs', 'ü'), 'x');
    symlinkSync(join(root, 'blobs', 'a'), join(root, 'blobs', 'b'));
    expect((await store.list('', { limit: 100 })).keys.map((o) => o.key)).toEqual(['blobs/a', 'blobs/b']);
    expect(await store.list('.tmp/', { limit: 100 })).toEqual({ keys: [] });
    expect(await store.list('.tmp', { limit: 100 })).toEqual({ keys: [] });
    expect(await store.stat('blobs/b')).toMatchObject({ size: 1 });
  });

  it('refuses a list prefix whose directories could escape the root', async () => {
    const store = new FsBlobStore(root);
    for (const prefix of ['../', 'a/../../', '/abs/', 'a//', './']) {
      await expect(store.list(prefix, { limit: 1 }), JSON.stringify(prefix)).rejects.toThrow(/invalid object key/);
    }
  });

  it('refuses keys that could escape the root', async () => {
    const store = new FsBlobStore(root);
    for (const key of ['../escape', 'a/../../b', '/abs', 'a//b', './a', 'a/.', '', 'a\\b']) {
      await expect(store.stat(key), JSON.stringify(key)).rejects.toThrow(/invalid object key/);
    }
  });
});
