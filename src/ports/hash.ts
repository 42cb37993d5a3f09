/** Digest algorithms the registry accepts (OCI image-spec, descriptor.md#registered-algorithms). */
export type DigestAlgorithm = 'sha256' | 'sha512';

/** An incremental hash. `digest()` may be called once, after the last `update()`. */
export interface IncrementalHash {
  update(bytes: Uint8Array): void;
  /** Lower-case hex of the hash. */
  digest(): string;
}

/**
 * Makes incremental hashes. Core cannot import node:crypto, so the entry point hands
 * one in: node:crypto on Node and on Workers (nodejs_compat), both native speed.
 */
export type HashFactory = (algorithm: DigestAlgorithm) => IncrementalHash;
