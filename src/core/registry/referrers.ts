import { MAX_LIST_LIMIT, type Json } from '../../ports/meta-index.js';
import { OciError } from '../errors.js';
import { parseDigest, type Digest } from '../oci/digest.js';
import { MAX_MANIFEST_BYTES, type Descriptor } from '../oci/manifest.js';
import { readCapped } from '../streams.js';
import type { Ctx } from './context.js';
import { keys, objects } from './keys.js';

/**
 * The referrers API (spec.md#listing-referrers): manifests in a repository whose `subject`
 * is a given digest, as descriptors, optionally filtered by artifactType. An unknown subject
 * has no referrers, which is an empty list, not an error.
 *
 * A listing is paged (the spec's Link header, continued by `last`) so that what one response
 * costs is bounded whatever a repository holds: at most REFERRERS_PAGE_BYTES of descriptors, and
 * at most REFERRERS_SCAN_ENTRIES index entries examined (a filter that matches little answers a
 * short page and a Link rather than reading the whole partition). Annotations larger than
 * MAX_INDEXED_ANNOTATION_BYTES are not copied into index items (DynamoDB caps an item at
 * 400 KB); such an entry says so, and its annotations are read from the manifest when listed.
 */

/**
 * Descriptors one referrers response holds, in bytes of JSON. Clients read the response as an
 * image index, and the manifest size limit they and we accept is 4 MiB, so a page stays within
 * it (one descriptor larger than that alone is still answered, by itself).
 */
export const REFERRERS_PAGE_BYTES = 4 * 1024 * 1024 - 1024;
/** Index entries one request examines at most, kept or filtered out. */
export const REFERRERS_SCAN_ENTRIES = 10_000;
/**
 * Annotations copied into a manifest's index items at most, as JSON. Larger ones stay in the
 * manifest, which the listing reads back.
 */
export const MAX_INDEXED_ANNOTATION_BYTES = 8 * 1024;
/** Manifests read at once for their annotations while a page is built. */
const ANNOTATION_READS = 8;

/** A referrer's index entry: its descriptor, and whether its annotations were left in the manifest. */
export type ReferrerEntry = Descriptor & { largeAnnotations?: true };

export interface ReferrersPage {
  manifests: Descriptor[];
  /** Whether an artifactType filter was applied (answered with OCI-Filters-Applied). */
  filtered: boolean;
  next?: string;
}

export class Referrers {
  constructor(private readonly ctx: Ctx) {}

  async list(name: string, subject: Digest, artifactType?: string, last?: string): Promise<ReferrersPage> {
    const filtered = artifactType !== undefined;
    const pk = keys.referrerPartition(name, subject.value);
    const manifests: Descriptor[] = [];
    let bytes = 0;
    let after = last;
    for (let scanned = 0; ; ) {
      const batch = await this.ctx.index.list<ReferrerEntry & Json>(pk, { after, limit: MAX_LIST_LIMIT });
      const kept = batch.filter((e) => !filtered || e.item.value.artifactType === artifactType);
      for (let i = 0; i < kept.length; i += ANNOTATION_READS) {
        const group = kept.slice(i, i + ANNOTATION_READS);
        const descriptors = await Promise.all(group.map((e) => this.descriptor(name, e.item.value)));
        for (const d of descriptors) {
          const size = utf8Length(JSON.stringify(d)) + 1;
          if (manifests.length > 0 && bytes + size > REFERRERS_PAGE_BYTES) return { manifests, filtered, next: lastOf(manifests) };
          manifests.push(d);
          bytes += size;
        }
      }
      scanned += batch.length;
      if (batch.length < MAX_LIST_LIMIT) return { manifests, filtered };
      after = batch[batch.length - 1]!.sk;
      if (scanned >= REFERRERS_SCAN_ENTRIES) return { manifests, filtered, next: after };
    }
  }

  /** The descriptor of an entry, with the annotations read back from its manifest when they were too large to index. */
  private async descriptor(name: string, entry: ReferrerEntry): Promise<Descriptor> {
    const { largeAnnotations, ...descriptor } = entry;
    if (!largeAnnotations) return descriptor;
    const object = await this.ctx.store.get(objects.content(parseDigest(descriptor.digest)));
    // The bytes were stored before the entry was written; gone means collected since, and the
    // entry with it soon: answered without annotations rather than failing the listing.
    if (!object) return descriptor;
    const bytes = await readCapped(object.body, MAX_MANIFEST_BYTES, () => new OciError('INTERNAL', `stored manifest ${descriptor.digest} in ${name} is larger than a manifest may be`));
    const annotations = (JSON.parse(new TextDecoder().decode(bytes)) as { annotations?: Record<string, string> }).annotations;
    return annotations ? { ...descriptor, annotations } : descriptor;
  }
}

/** The key of the last descriptor on a page: its digest is the entry's sort key. */
function lastOf(manifests: Descriptor[]): string {
  return manifests[manifests.length - 1]!.digest;
}

/** Annotations as an index item may hold them: undefined when there are none or when they are too large (the entry says so). */
export function indexedAnnotations(annotations: Record<string, string> | undefined): { annotations?: Record<string, string>; largeAnnotations?: true } {
  if (!annotations) return {};
  return utf8Length(JSON.stringify(annotations)) <= MAX_INDEXED_ANNOTATION_BYTES ? { annotations } : { largeAnnotations: true };
}

function utf8Length(text: string): number {
  let n = text.length;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0x80) n += c >= 0x800 && (c < 0xd800 || c > 0xdfff) ? 2 : 1;
  }
  return n;
}
