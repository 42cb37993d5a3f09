import type { BlobStore } from '../../ports/blob-store.js';
import type { Clock } from '../../ports/clock.js';
import type { HashFactory } from '../../ports/hash.js';
import type { MetaIndex } from '../../ports/meta-index.js';

/** What the registry core needs from the outside world: ports only. */
export interface RegistryDeps {
  store: BlobStore;
  index: MetaIndex;
  hash: HashFactory;
  clock: Clock;
  options?: Partial<RegistryOptions>;
}

export interface RegistryOptions {
  /**
   * Smallest chunk a client should PATCH, sent as OCI-Chunk-Min-Length; 0 sends nothing. No
   * store needs one (chunks are stored as separate objects), but larger chunks keep uploads
   * far from MAX_UPLOAD_PARTS.
   */
  chunkMinLength: number;
  /**
   * An upload untouched for this long is forgotten. Its parts stay under uploads/<id>/ until
   * the garbage collector (or an S3 lifecycle rule on that prefix) removes them.
   */
  uploadTtlMs: number;
  /**
   * When > 0 and the store can presign, blob downloads are redirected to a store URL valid for
   * this many seconds instead of streaming through Outpost.
   */
  redirectSeconds: number;
}

export const DEFAULT_OPTIONS: RegistryOptions = {
  chunkMinLength: 0,
  uploadTtlMs: 24 * 60 * 60 * 1000,
  redirectSeconds: 0,
};

export interface Ctx extends Omit<RegistryDeps, 'options'> {
  options: RegistryOptions;
}
