import { OciError } from '../errors.js';
import { tryParseDigest, type Digest } from './digest.js';

/**
 * Repository name grammar from the distribution spec (spec.md#pulling-manifests):
 *   [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*
 */
const NAME_GRAMMAR = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$/;
/** Tag grammar: [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}. */
const TAG_GRAMMAR = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
/**
 * Distribution caps a name at 255 characters including the registry host, so clients
 * can always form a full reference; we keep the same cap on the path part.
 */
export const MAX_NAME_LENGTH = 255;

export function isValidName(name: string): boolean {
  return name.length <= MAX_NAME_LENGTH && NAME_GRAMMAR.test(name);
}

export function parseName(name: string): string {
  if (!isValidName(name)) {
    throw new OciError(
      'NAME_INVALID',
      name.length > MAX_NAME_LENGTH
        ? `repository name is longer than ${MAX_NAME_LENGTH} characters`
        : `invalid repository name "${name.slice(0, 80)}": lower-case alphanumeric components separated by "/", ".", "_", "__" or "-"`,
      { name: name.slice(0, 300) },
    );
  }
  return name;
}

export function isValidTag(tag: string): boolean {
  return TAG_GRAMMAR.test(tag);
}

/** A manifest reference: a tag or a digest. */
export type Reference = { kind: 'tag'; tag: string } | { kind: 'digest'; digest: Digest };

export function parseReference(reference: string): Reference {
  if (reference.includes(':')) {
    const digest = tryParseDigest(reference);
    if (digest) return { kind: 'digest', digest };
    throw new OciError('DIGEST_INVALID', `invalid digest reference "${reference.slice(0, 140)}"`, {
      reference: reference.slice(0, 140),
    });
  }
  if (isValidTag(reference)) return { kind: 'tag', tag: reference };
  throw new OciError(
    'REFERENCE_INVALID',
    `invalid tag "${reference.slice(0, 140)}": at most 128 characters of [a-zA-Z0-9._-], not starting with "." or "-"`,
    { reference: reference.slice(0, 140) },
  );
}
