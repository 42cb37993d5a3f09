import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FsBlobStore } from '../../src/adapters/local/fs-blob-store.js';
import { MemoryBlobStore } from '../../src/adapters/memory/blob-store.js';
import { blobStoreContract } from './blob-store.contract.js';

blobStoreContract('MemoryBlobStore', () => ({ store: new MemoryBlobStore() }));

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
  { streamsReads: true },
);

describe('FsBlobStore keys', () => {
  it('refuses keys that could escape the root', async () => {
    const root = mkdtempSync(join(tmpdir(), 'outpost-blobs-'));
    try {
      const store = new FsBlobStore(root);
      for (const key of ['../escape', 'a/../../b', '/abs', 'a//b', './a', 'a/.', '', 'a\\b']) {
        await expect(store.stat(key), JSON.stringify(key)).rejects.toThrow(/invalid object key/);
      }
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
