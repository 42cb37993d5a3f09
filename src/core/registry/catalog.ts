import type { Json } from '../../ports/meta-index.js';
import type { Ctx } from './context.js';
import { keys } from './keys.js';
import { readPage, type PageRequest } from './pages.js';

/** Names one filtered catalog request examines at most (as referrers.ts bounds its filter). */
export const CATALOG_SCAN_ENTRIES = 10_000;

/** The repository list (GET /v2/_catalog), sorted, paged like tags. */
export class Catalog {
  constructor(private readonly ctx: Ctx) {}

  /**
   * A page of the repositories `visible` keeps (all without it). Filtered while paging, so that
   * a page is full and its `next` is a name the caller may see: a cursor taken from the
   * unfiltered list would name repositories the caller may not. A filtered request examines at
   * most CATALOG_SCAN_ENTRIES names; past them the page ends at the last visible one (or, with
   * none, the listing ends: what lies further is not listed to this caller).
   */
  async list(request: PageRequest, visible?: (name: string) => boolean): Promise<{ repositories: string[]; next?: string }> {
    const keep = visible ? (e: { sk: string }) => visible(e.sk) : undefined;
    const page = await readPage<Json>(this.ctx.index, keys.reposPartition, request, keep, visible ? CATALOG_SCAN_ENTRIES : Infinity);
    return { repositories: page.entries.map((e) => e.sk), next: page.next };
  }
}
