import type { Json } from '../../ports/meta-index.js';
import type { Digest } from '../oci/digest.js';
import type { Descriptor } from '../oci/manifest.js';
import type { Ctx } from './context.js';
import { keys } from './keys.js';
import { readPage } from './pages.js';

/**
 * The referrers API (spec.md#listing-referrers): manifests in a repository whose `subject`
 * is a given digest, as descriptors, optionally filtered by artifactType. An unknown subject
 * has no referrers, which is an empty list, not an error.
 */
export interface ReferrersPage {
  manifests: Descriptor[];
  /** Whether an artifactType filter was applied (answered with OCI-Filters-Applied). */
  filtered: boolean;
  next?: string;
}

export class Referrers {
  constructor(private readonly ctx: Ctx) {}

  async list(name: string, subject: Digest, artifactType?: string, last?: string): Promise<ReferrersPage> {
    const page = await readPage<Descriptor & Json>(
      this.ctx.index,
      keys.referrerPartition(name, subject.value),
      { last },
      (e) => artifactType === undefined || e.item.value.artifactType === artifactType,
    );
    return { manifests: page.entries.map((e) => e.item.value), filtered: artifactType !== undefined, next: page.next };
  }
}
