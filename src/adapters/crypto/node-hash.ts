import { createHash } from 'node:crypto';
import type { HashFactory } from '../../ports/hash.js';

/** node:crypto hashes: native speed on Node, and on Workers with nodejs_compat. */
export const nodeHash: HashFactory = (algorithm) => {
  const hash = createHash(algorithm);
  return {
    update: (bytes) => void hash.update(bytes),
    digest: () => hash.digest('hex'),
  };
};
