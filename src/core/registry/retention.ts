import type { Json, MetaIndex } from '../../ports/meta-index.js';
import type { Clock } from '../../ports/clock.js';
import { listReferences } from '../gc/references.js';
import { OciError } from '../errors.js';
import { matchesAny } from '../glob.js';
import { parseDigest } from '../oci/digest.js';
import type { MirrorConfig } from '../mirror/config.js';
import { isMirrored } from '../mirror/retention.js';
import { NO_IMMUTABLE_TAGS, type ImmutableTags } from './immutable-tags.js';
import { keys } from './keys.js';
import type { ManifestRecord, Manifests } from './manifests.js';
import { allItems } from './pages.js';
import type { TagItem } from './tags.js';

/**
 * Retention of hosted content: only by explicit policy, per repository glob.
 *
 *   keepTags N: of a repository's tags that the policy's pattern matches, the N most recently
 *               pushed stay; the older ones are deleted (the manifests stay, now untagged)
 *   untaggedAfter A: a manifest untagged for A is deleted (with its tags none, its referrer entry,
 *               its references), unless a manifest of the repository names it (a child of an
 *               index) or it is a referrer of a manifest still in the repository (a signature)
 *
 * A tag's time is when it was last pushed (tag#<name>/<tag> { digest, at }); a tag from before
 * times were kept is stamped by the first pass that sees it. "Untagged for A" is measured by the
 * passes: the first pass that finds a manifest untagged notes it (untagged#<name> / <digest> ->
 * { since }), a pass that finds it tagged again removes the note, and a pass after since + A
 * deletes the manifest. Deletes go by version: a tag pushed again, or a manifest pushed again
 * (which rewrites its record), after the pass read it is kept. A repository matched by several
 * policies follows the first. Mirrored repositories are never matched (retention.ts of the
 * mirror evicts those). Cost: every tag and manifest record of the matched repositories, once
 * per pass.
 */

export interface HostedPolicy {
  repositories: RegExp[];
  /** Only tags this matches are counted and pruned; all by default. */
  tags?: RegExp;
  keepTags?: number;
  untaggedAfterMs?: number;
}

export interface HostedRetentionReport {
  repositories: number;
  tagsDeleted: number;
  manifestsDeleted: number;
}

export interface HostedEviction {
  name: string;
  /** The tag deleted, or the digest of the manifest deleted. */
  what: string;
  reason: 'keepTags' | 'untaggedAfter';
}

export interface HostedRetentionDeps {
  index: MetaIndex;
  clock: Clock;
  manifests: Manifests;
  mirror: MirrorConfig;
  /** Immutable tags are never pruned (immutable-tags.ts). */
  immutable?: ImmutableTags;
}

const untaggedKey = (name: string, digest: string) => ({ pk: `untagged#${name}`, sk: digest });
const COSIGN_TAG = /^sha(256|512)-[0-9a-f]{64,128}(\.(sig|att|sbom))?$/;

export async function retainHosted(
  deps: HostedRetentionDeps,
  policies: HostedPolicy[],
  options: { dryRun?: boolean; onEvict?: (e: HostedEviction) => void } = {},
): Promise<HostedRetentionReport> {
  const report: HostedRetentionReport = { repositories: 0, tagsDeleted: 0, manifestsDeleted: 0 };
  if (policies.length === 0) return report;
  const dryRun = options.dryRun ?? false;
  const immutable = deps.immutable ?? NO_IMMUTABLE_TAGS;
  for await (const repo of allItems<Json>(deps.index, keys.reposPartition)) {
    const name = repo.sk;
    if (isMirrored(deps.mirror, name)) continue;
    const policy = policies.find((p) => matchesAny(p.repositories, name));
    if (!policy) continue;
    report.repositories++;
    const now = deps.clock.now();
    // Records before tags: a push that lands between the two listings rewrites its record (a new
    // version), so the delete below, at the version listed here, fails and the push stays.
    const records: Array<{ digest: string; record: ManifestRecord; version: number }> = [];
    if (policy.untaggedAfterMs !== undefined) {
      for await (const { sk, item } of allItems<ManifestRecord & Json>(deps.index, keys.manifest(name, '').pk)) records.push({ digest: sk, record: item.value, version: item.version });
    }
    const tags: Array<{ tag: string; digest: string; at: number; version: number }> = [];
    for await (const { sk, item } of allItems<TagItem & Json>(deps.index, keys.tagPartition(name))) {
      let { at } = item.value;
      let version = item.version;
      if (at === undefined) {
        at = now;
        if (!dryRun) version = (await deps.index.compareAndSet(keys.tag(name, sk), item.version, { ...(item.value as TagItem), at } as TagItem & Json)) ?? -1;
      }
      // -1: moved meanwhile, by a push that is newer than anything here: never deleted.
      if (version >= 0) tags.push({ tag: sk, digest: item.value.digest, at, version });
    }
    const deletedTags = new Set<string>();
    if (policy.keepTags !== undefined) {
      // Cosign's tags (signatures, attestations, SBOMs, the referrers tag schema) are not releases:
      // never counted, never pruned; they go with their image (untaggedAfter, or a DELETE).
      const counted = tags
        .filter((t) => !COSIGN_TAG.test(t.tag) && (!policy.tags || policy.tags.test(t.tag)) && !immutable.rule(name, t.tag))
        .sort((a, b) => b.at - a.at || (a.tag < b.tag ? -1 : 1));
      for (const t of counted.slice(policy.keepTags)) {
        options.onEvict?.({ name, what: t.tag, reason: 'keepTags' });
        report.tagsDeleted++;
        deletedTags.add(t.tag);
        // Only the tag as read: one pushed again since stays.
        if (!dryRun) await deps.index.delete(keys.tag(name, t.tag), t.version);
      }
    }
    if (policy.untaggedAfterMs === undefined) continue;
    const tagged = new Set(tags.filter((t) => !deletedTags.has(t.tag)).map((t) => t.digest));
    const notes = new Map<string, number>();
    for await (const { sk, item } of allItems<{ since: number }>(deps.index, `untagged#${name}`)) notes.set(sk, item.value.since);
    const present = new Set(records.map((r) => r.digest));
    for (const { digest, record, version } of records) {
      const kept = tagged.has(digest) || (record.subject !== undefined && present.has(record.subject)) || (await namedIn(deps, name, digest));
      const since = notes.get(digest);
      if (kept) {
        if (since !== undefined && !dryRun) await deps.index.delete(untaggedKey(name, digest));
        continue;
      }
      if (since === undefined) {
        if (!dryRun) await deps.index.put(untaggedKey(name, digest), { since: now });
        continue;
      }
      if (now - since < policy.untaggedAfterMs) continue;
      options.onEvict?.({ name, what: digest, reason: 'untaggedAfter' });
      report.manifestsDeleted++;
      if (dryRun) continue;
      try {
        // At the version read: a manifest pushed again since (a new tag with it) stays.
        await deps.manifests.delete(name, { kind: 'digest', digest: parseDigest(digest) }, version);
      } catch (err) {
        // Pushed again since, or tagged immutably since: either way it stays.
        if (!(err instanceof OciError && (err.kind === 'MANIFEST_UNKNOWN' || err.kind === 'TAG_IMMUTABLE'))) throw err;
      }
      await deps.index.delete(untaggedKey(name, digest));
    }
  }
  return report;
}

/** Whether a manifest record of `name` names `digest` (as a child of an index): one list of its references. */
async function namedIn(deps: HostedRetentionDeps, name: string, digest: string): Promise<boolean> {
  for await (const r of listReferences({ index: deps.index }, digest)) {
    if (r.kind === 'manifest' && r.repository === name) return true;
  }
  return false;
}
