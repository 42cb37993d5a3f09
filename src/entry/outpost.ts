import { nodeHash } from '../adapters/crypto/node-hash.js';
import { createRegistry } from '../core/registry/registry.js';
import { createApp } from '../http/app.js';
import type { BlobStore } from '../ports/blob-store.js';
import { systemClock } from '../ports/clock.js';
import type { MetaIndex } from '../ports/meta-index.js';
import type { Config } from './config.js';

/** The Outpost HTTP app over a store and an index, as every entry point builds it. */
export function outpostApp(config: Config, adapters: { store: BlobStore; index: MetaIndex }) {
  const registry = createRegistry({
    ...adapters,
    hash: nodeHash,
    clock: systemClock,
    options: {
      uploadTtlMs: config.uploadTtlSeconds * 1000,
      redirectSeconds: config.redirectSeconds,
      chunkMinLength: config.chunkMinBytes,
    },
  });
  return createApp({ registry });
}
