import type { DigestAlgorithm, HashFactory } from '../../ports/hash.js';
import { OciError } from '../errors.js';

/**
 * Digest grammar from the image spec (descriptor.md#digests):
 *   digest    ::= algorithm ":" encoded
 *   algorithm ::= component (separator component)*
 *   encoded   ::= [a-zA-Z0-9=_-]+
 * Only the registered algorithms are accepted, with their exact encoded lengths.
 */
const DIGEST_GRAMMAR = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;
const ENCODED: Record<DigestAlgorithm, RegExp> = {
  sha256: /^[a-f0-9]{64}$/,
  sha512: /^[a-f0-9]{128}$/,
};

/** sha512 is the longest registered digest (135 characters); anything much longer is refused before the grammar runs. */
const MAX_DIGEST_LENGTH = 256;

export interface Digest {
  readonly algorithm: DigestAlgorithm;
  readonly encoded: string;
  /** `algorithm:encoded`, the canonical string form. */
  readonly value: string;
}

/** Parses a digest, or returns undefined when it is not one the registry can verify. */
export function tryParseDigest(input: string): Digest | undefined {
  if (input.length > MAX_DIGEST_LENGTH || !DIGEST_GRAMMAR.test(input)) return undefined;
  const colon = input.indexOf(':');
  const algorithm = input.slice(0, colon);
  const encoded = input.slice(colon + 1);
  if (algorithm !== 'sha256' && algorithm !== 'sha512') return undefined;
  if (!ENCODED[algorithm].test(encoded)) return undefined;
  return { algorithm, encoded, value: input };
}

/** Parses a digest or throws DIGEST_INVALID naming what was wrong. */
export function parseDigest(input: string): Digest {
  const digest = tryParseDigest(input);
  if (digest) return digest;
  const algorithm = input.includes(':') ? input.slice(0, input.indexOf(':')) : '';
  const why =
    algorithm === 'sha256' || algorithm === 'sha512'
      ? `${algorithm} digests are lower-case hex of length ${algorithm === 'sha256' ? 64 : 128}`
      : 'supported algorithms are sha256 and sha512';
  throw new OciError('DIGEST_INVALID', `invalid digest "${truncate(input)}": ${why}`, { digest: truncate(input) });
}

export function digestOf(hash: HashFactory, algorithm: DigestAlgorithm, bytes: Uint8Array): Digest {
  const h = hash(algorithm);
  h.update(bytes);
  const encoded = h.digest();
  return { algorithm, encoded, value: `${algorithm}:${encoded}` };
}

function truncate(s: string): string {
  return s.length > 80 ? `${s.slice(0, 80)}...` : s;
}
