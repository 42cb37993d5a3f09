import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { FsBlobStore } from '../../src/adapters/local/fs-blob-store.js';

/**
 * FsBlobStore against a delete that prunes a directory at the worst moment: between a put's
 * mkdir and its rename (another request, or another process on the same data directory,
 * deleting the directory's last object). The contract suite races them for real; here the
 * interleaving is forced, every time, by a rename that first lets the "other process" run.
 */

const hooks = vi.hoisted(() => ({ beforeRename: undefined as undefined | ((from: string, to: string) => Promise<void>) }));

vi.mock('node:fs/promises', async (importOriginal) => {
  const fs = await importOriginal<typeof import('node:fs/promises')>();
  return {
    ...fs,
    rename: async (from: string, to: string) => {
      await hooks.beforeRename?.(from, to);
      return fs.rename(from, to);
    },
  };
});

const bytes = (text: string) => new Response(text).body!;

describe('FsBlobStore: a put racing the prune of its directory', () => {
  let root: string;
  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'outpost-blobs-'));
  });
  afterEach(() => {
    hooks.beforeRename = undefined;
    rmSync(root, { recursive: true, force: true });
  });

  it('makes the directory again and renames, when a delete removed it after the mkdir', async () => {
    const store = new FsBlobStore(root);
    const other = new FsBlobStore(root);
    await store.put('uploads/u/0-a', bytes('old'));
    let raced = 0;
    hooks.beforeRename = async (_from, to) => {
      // The other process deletes the directory's only object, which prunes the directory.
      if (dirname(to) === join(root, 'uploads', 'u') && raced++ < 3) {
        await other.delete('uploads/u/0-a');
      }
    };
    await store.put('uploads/u/1-b', bytes('new'));
    expect(raced).toBeGreaterThanOrEqual(2);
    expect(await new Response((await store.get('uploads/u/1-b'))!.body).text()).toBe('new');
    expect((await store.list('', { limit: 10 })).keys.map((o) => o.key)).toEqual(['uploads/u/1-b']);
  });

  it('makes the directory again for a move too', async () => {
    const store = new FsBlobStore(root);
    await store.put('uploads/u/0-a', bytes('part'));
    await store.put('blobs/sha256/ab/other', bytes('x'));
    let raced = false;
    hooks.beforeRename = async (_from, to) => {
      if (to.endsWith('abcd') && !raced) {
        raced = true;
        await store.delete('blobs/sha256/ab/other');
      }
    };
    await store.move('uploads/u/0-a', 'blobs/sha256/ab/abcd');
    expect(raced).toBe(true);
    expect(await new Response((await store.get('blobs/sha256/ab/abcd'))!.body).text()).toBe('part');
  });

  it('fails, leaving nothing, when its own temporary was reclaimed from under it', async () => {
    const store = new FsBlobStore(root);
    hooks.beforeRename = async (from) => {
      // A writer frozen for longer than the grace: its temporary is gone when it wakes.
      rmSync(from, { force: true });
    };
    await expect(store.put('blobs/k', bytes('lost'))).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await store.stat('blobs/k')).toBeUndefined();
  });
});
