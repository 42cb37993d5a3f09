import type { ImmutableTagRule } from '../auth/config.js';
import type { ImmutableTags } from './immutable-tags.js';
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
  /**
   * The largest blob stored, in bytes: a push or an upload that would pass it is refused before
   * any byte is stored when its length is declared (Content-Length, Content-Range), and cut off,
   * with nothing visible, as soon as it passes the cap otherwise (core/registry/blobs.ts).
   */
  maxBlobBytes: number;
  /** Tags that are never moved or deleted once set (immutable-tags.ts); none by default. */
  immutableTags?: readonly ImmutableTagRule[];
}

/**
 * 64 GiB: above the largest layer a managed registry accepts (ECR: 52,000 MiB; GHCR: 10 GB),
 * so any image they serve can be pushed or mirrored, and equal to the mirror's fill limit
 * (MAX_FILL_BYTES). Far below S3's 5 TiB per object, and within what the S3 store's 10,000
 * parts hold with its default buffer budget (about 226 GiB at 8 MiB parts, 186 GiB at the
 * smallest, 5 MiB). A bound on what one request may make the store hold, not a quota: an
 * operator with a small disk sets a smaller one.
 */
export const DEFAULT_MAX_BLOB_BYTES = 64 * 1024 ** 3;

export const DEFAULT_OPTIONS: RegistryOptions = {
  chunkMinLength: 0,
  uploadTtlMs: 24 * 60 * 60 * 1000,
  redirectSeconds: 0,
  maxBlobBytes: DEFAULT_MAX_BLOB_BYTES,
};

export interface Ctx extends Omit<RegistryDeps, 'options'> {
  options: RegistryOptions;
  /** options.immutableTags over hosted repositories (immutable-tags.ts). */
  immutable: ImmutableTags;
}
