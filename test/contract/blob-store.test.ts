import { randomBytes, randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FsBlobStore } from '../../src/adapters/local/fs-blob-store.js';
import { MemoryBlobStore } from '../../src/adapters/memory/blob-store.js';
import { MAX_LIST_KEYS } from '../../src/ports/blob-store.js';
import { TestClock } from '../support/clock.js';
import { blobStoreLeftoversContract } from './blob-store-leftovers.contract.js';
import { blobStoreContract } from './blob-store.contract.js';

const memoryFixture = () => ({ store: new MemoryBlobStore() });
blobStoreContract('MemoryBlobStore', memoryFixture, { reportsLastModified: true });
blobStoreLeftoversContract('MemoryBlobStore', memoryFixture);

function fsFixture() {
  const root = mkdtempSync(join(tmpdir(), 'outpost-blobs-'));
  return {
    store: new FsBlobStore(root),
    // Writes stage in <root>/.tmp and are renamed into place; nothing may stay there.
    leftovers: async () => staged(root),
    // A process killed mid-write leaves its partial temporary file (the SIGKILL test shows it does).
    abandon: async () => {
      mkdirSync(join(root, '.tmp'), { recursive: true });
      writeFileSync(join(root, '.tmp', randomUUID()), randomBytes(1000));
    },
    cleanup: () => rmSync(root, { recursive: true, force: true }),
  };
}
blobStoreContract('FsBlobStore', fsFixture, { streamsReads: true, reportsLastModified: true });
blobStoreLeftoversContract('FsBlobStore', fsFixture);

/** The names in <root>/.tmp. */
function staged(root: string): string[] {
  try {
    return readdirSync(join(root, '.tmp'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

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

describe('FsBlobStore leftovers', () => {
  let root: string;
  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'outpost-blobs-'));
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  /** Every directory below root but .tmp, relative, sorted. */
  const directories = (dir = ''): string[] =>
    readdirSync(join(root, dir), { withFileTypes: true })
      .filter((d) => d.isDirectory() && !(dir === '' && d.name === '.tmp'))
      .flatMap((d) => [dir + d.name, ...directories(`${dir}${d.name}/`)])
      .sort();
  const old = (path: string) => {
    const then = new Date(Date.now() - 2 * 60 * 60 * 1000);
    utimesSync(path, then, then);
  };

  it('removes the directories a delete empties, up to the root and no further', async () => {
    const store = new FsBlobStore(root);
    for (const key of ['uploads/u1/0-a', 'uploads/u1/1-b', 'uploads/u2/0-c', 'blobs/sha256/ab/abcd']) await store.put(key, bytes('x'));
    await store.delete('uploads/u1/0-a');
    expect(directories()).toContain('uploads/u1');
    await store.delete('uploads/u1/1-b');
    expect(directories()).toEqual(['blobs', 'blobs/sha256', 'blobs/sha256/ab', 'uploads', 'uploads/u2']);
    await store.delete('uploads/u2/0-c');
    await store.delete('uploads/u2/0-c');
    await store.delete('never/written/here');
    expect(directories()).toEqual(['blobs', 'blobs/sha256', 'blobs/sha256/ab']);
    await store.delete('blobs/sha256/ab/abcd');
    expect(directories()).toEqual([]);
    expect(readdirSync(root).filter((n) => n !== '.tmp')).toEqual([]);
    // The directories come back with the next put.
    await store.put('blobs/sha256/ab/abcd', bytes('y'));
    expect(await new Response((await store.get('blobs/sha256/ab/abcd'))!.body).text()).toBe('y');
  });

  it('removes the upload directory that moving its only part empties', async () => {
    const store = new FsBlobStore(root);
    await store.put('uploads/u/0-a', bytes('abc'));
    await store.move('uploads/u/0-a', 'blobs/sha256/ab/abcd');
    expect(directories()).toEqual(['blobs', 'blobs/sha256', 'blobs/sha256/ab']);
    await expect(store.move('uploads/u/0-a', 'blobs/other')).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('refuses keys inside its staging directory, which reclaim owns', async () => {
    const store = new FsBlobStore(root);
    for (const key of ['.tmp', '.tmp/x', '.tmp/a/b']) {
      await expect(store.put(key, bytes('x')), key).rejects.toThrow(/invalid object key/);
      await expect(store.delete(key), key).rejects.toThrow(/invalid object key/);
    }
    // Other names that merely start with a dot are keys like any other.
    await store.put('.tmpx/a', bytes('x'));
    expect((await store.list('', { limit: 10 })).keys.map((o) => o.key)).toEqual(['.tmpx/a']);
  });

  it('reclaims temporaries untouched for longer than the grace and empty directories; a stalled write stays alive', async () => {
    const store = new FsBlobStore(root, { heartbeatMs: 20 });
    await store.put('blobs/sha256/ab/abcd', bytes('kept'));
    mkdirSync(join(root, '.tmp'), { recursive: true });
    writeFileSync(join(root, '.tmp', 'dead-long-ago'), 'partial');
    old(join(root, '.tmp', 'dead-long-ago'));
    writeFileSync(join(root, '.tmp', 'dead-just-now'), 'partial');
    mkdirSync(join(root, 'a', 'b', 'c'), { recursive: true });
    mkdirSync(join(root, 'uploads', 'x'), { recursive: true });

    // A write whose client stalls, with its file aged as if it had stalled for two hours.
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    let sent = 0;
    const putting = store.put(
      'uploads/live/0-a',
      new ReadableStream<Uint8Array>({
        async pull(c) {
          if (sent++ === 1) await released;
          if (sent > 3) return c.close();
          c.enqueue(new Uint8Array(1000).fill(sent));
        },
      }),
      3000,
    );
    let live: string | undefined;
    while (!live) {
      await new Promise((r) => setTimeout(r, 5));
      live = staged(root).find((n) => !n.startsWith('dead-'));
    }
    old(join(root, '.tmp', live));
    // Its heartbeat touches it again within a beat.
    await new Promise((r) => setTimeout(r, 100));

    expect(await store.reclaim(60 * 60 * 1000)).toEqual({ temporary: 1, directories: 5 });
    expect(staged(root).sort()).toEqual(['dead-just-now', live].sort());
    expect(directories()).toEqual(['blobs', 'blobs/sha256', 'blobs/sha256/ab']);
    release();
    expect(await putting).toEqual({ size: 3000 });
    expect(await store.stat('uploads/live/0-a')).toMatchObject({ size: 3000 });
    expect(await store.stat('blobs/sha256/ab/abcd')).toMatchObject({ size: 4 });
    expect(await store.reclaim(60 * 60 * 1000)).toEqual({ temporary: 0, directories: 0 });
  });

  it('reclaims on a store that has never written anything', async () => {
    expect(await new FsBlobStore(join(root, 'not-yet')).reclaim(0)).toEqual({ temporary: 0, directories: 0 });
  });
});
