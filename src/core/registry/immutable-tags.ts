/**
 * Immutable tags (the document's `immutableTags:`): a tag of a hosted repository that a rule
 * names, once it names a manifest, is never moved to another one and never deleted, by a push,
 * a DELETE or hosted retention. Pushing the same manifest to it again is allowed (clients retry
 * pushes). Mirrored repositories are never covered, whatever a glob matches: their tags are the
 * upstream's, moved by revalidation, and their content is evicted by mirror retention.
 *
 * Races, and what each leaves:
 *   two first pushes of the tag      the tag is written with put-if-absent: one wins, the other
 *                                    is refused (its manifest stays, untagged)
 *   a first push and a DELETE by tag the DELETE never removes a covered tag: it answers the
 *                                    refusal when the tag exists, a miss when it does not yet
 *   a first push and a DELETE of its manifest by digest
 *                                    the DELETE checks the manifest's tags first, and its
 *                                    clean-up of tags skips covered ones, so a tag created in
 *                                    between stays; it then names a manifest whose record is gone
 *                                    (a miss) until that same manifest is pushed again, and it
 *                                    can never be moved to another
 */
import type { ImmutableTagRule } from '../auth/config.js';
import { OciError } from '../errors.js';

export interface ImmutableTags {
  /** The rule that makes `tag` of repository `name` immutable, if any. */
  rule(name: string, tag: string): ImmutableTagRule | undefined;
  /** Whether any rule covers the repository at all (a DELETE by digest then checks its tags). */
  covers(name: string): boolean;
}

export function immutableTags(rules: readonly ImmutableTagRule[], mirrored: (name: string) => boolean): ImmutableTags {
  const applies = (r: ImmutableTagRule, name: string) => r.repositories.some((g) => g.test(name));
  return {
    rule: (name, tag) => (rules.length === 0 || mirrored(name) ? undefined : rules.find((r) => applies(r, name) && (r.tags === undefined || r.tags.test(tag)))),
    covers: (name) => rules.length > 0 && !mirrored(name) && rules.some((r) => applies(r, name)),
  };
}

export const NO_IMMUTABLE_TAGS: ImmutableTags = { rule: () => undefined, covers: () => false };

export function immutableTagError(rule: ImmutableTagRule, name: string, tag: string, doing: 'moved' | 'deleted'): OciError {
  return new OciError('TAG_IMMUTABLE', `tag "${tag.slice(0, 128)}" of ${name} is immutable (${rule.label}) and cannot be ${doing}`, { rule: rule.label, tag: tag.slice(0, 128) });
}
