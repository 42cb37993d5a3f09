import { MAX_LIST_LIMIT, type Item, type Json, type MetaIndex } from '../../ports/meta-index.js';

/**
 * Paging through one index partition for the list endpoints (tags, catalog, referrers).
 * `n` and `last` follow spec.md#listing-tags: at most `n` entries, all sorted after `last`.
 */

/**
 * Cap on entries in one response, whatever `n` asks for: each page is built in memory.
 * Longer listings continue through the Link header.
 */
export const MAX_PAGE_ENTRIES = 10_000;

export interface PageRequest {
  n?: number;
  last?: string;
}

export interface Page<T extends Json> {
  entries: Array<{ sk: string; item: Item<T> }>;
  /** The `last` to continue from, when more entries follow. */
  next?: string;
}

export async function readPage<T extends Json>(
  index: MetaIndex,
  pk: string,
  request: PageRequest,
  keep: (entry: { sk: string; item: Item<T> }) => boolean = () => true,
  /**
   * Entries examined at most, kept or not: past them the page ends at its last kept entry (its
   * `next`), or, when it kept none, the listing ends. A cursor is always a kept entry's key.
   */
  maxExamined = Infinity,
): Promise<Page<T>> {
  const want = Math.min(request.n ?? MAX_PAGE_ENTRIES, MAX_PAGE_ENTRIES);
  const entries: Array<{ sk: string; item: Item<T> }> = [];
  if (want === 0) return { entries };
  let after = request.last;
  let examined = 0;
  for (;;) {
    const batch = await index.list<T>(pk, { after, limit: MAX_LIST_LIMIT });
    for (const entry of batch) {
      if (++examined > maxExamined) return { entries, next: entries.at(-1)?.sk };
      if (!keep(entry)) continue;
      if (entries.length === want) return { entries, next: entries[entries.length - 1]!.sk };
      entries.push(entry);
    }
    if (batch.length < MAX_LIST_LIMIT) return { entries };
    after = batch[batch.length - 1]!.sk;
  }
}

/** Every item of one partition in sort-key order, a page at a time (housekeeping: backfill, retention, deletes). */
export async function* allItems<T extends Json>(index: MetaIndex, pk: string): AsyncGenerator<{ sk: string; item: Item<T> }> {
  let after: string | undefined;
  for (;;) {
    const batch = await index.list<T>(pk, { after, limit: MAX_LIST_LIMIT });
    yield* batch;
    if (batch.length < MAX_LIST_LIMIT) return;
    after = batch[batch.length - 1]!.sk;
  }
}
