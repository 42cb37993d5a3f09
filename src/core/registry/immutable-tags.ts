/**
 * Immutable tags (the document's `immutableTags:`): a tag that a rule names, once it names a
 * manifest, is never moved to another one and never deleted, by a push, a DELETE or hosted
 * retention. Pushing the same manifest to it again is allowed (clients retry pushes).
 *
 * The first push of such a tag writes it with put-if-absent, so of two pushes racing to create
 * it with different manifests one wins and the other is refused; its manifest stays, untagged.
 */
import type { ImmutableTagRule } from '../auth/config.js';
import { OciError } from '../errors.js';

export function immutableRule(rules: readonly ImmutableTagRule[], name: string, tag: string): ImmutableTagRule | undefined {
  return rules.find((r) => r.repositories.some((g) => g.test(name)) && (r.tags === undefined || r.tags.test(tag)));
}

/** Whether any rule covers the repository at all (a DELETE by digest then checks its tags). */
export function hasImmutableTags(rules: readonly ImmutableTagRule[], name: string): boolean {
  return rules.some((r) => r.repositories.some((g) => g.test(name)));
}

export function immutableTagError(rule: ImmutableTagRule, name: string, tag: string, doing: 'moved' | 'deleted'): OciError {
  return new OciError('DENIED', `tag "${tag.slice(0, 128)}" of ${name} is immutable (${rule.label}) and cannot be ${doing}`, { rule: rule.label, tag: tag.slice(0, 128) });
}
