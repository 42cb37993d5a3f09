import { expect } from 'vitest';

/**
 * Assertions for the paged list endpoints (tags, catalog): `n`, `last` and the RFC 8288
 * `Link: <...>; rel="next"` header (spec.md#listing-tags).
 */

/** Byte-wise order: what the spec calls lexical, and the order Distribution sorts in. */
export const lexical = (a: string, b: string): number => Buffer.compare(Buffer.from(a), Buffer.from(b));

/** The path and query of the next page, from the Link header; undefined when there is none. */
export function nextPage(res: Response): string | undefined {
  const link = res.headers.get('link');
  if (!link) return undefined;
  const m = /^<([^>]+)>;\s*rel="next"$/.exec(link);
  expect(m, `Link header ${link}`).not.toBeNull();
  return m![1];
}

/**
 * Checks the Link header of a page fetched with `query`: when more entries follow, it names
 * `path` with the same `n` and the page's last entry as `last`; otherwise there is none.
 */
export function expectNextLink(res: Response, path: string, query: string, page: string[], more: boolean): void {
  if (!more) {
    expect(res.headers.get('link')).toBeNull();
    return;
  }
  const next = new URL(nextPage(res)!, 'http://registry');
  expect(next.pathname).toBe(path);
  expect(next.searchParams.get('n')).toBe(new URLSearchParams(query).get('n'));
  expect(next.searchParams.get('last')).toBe(page[page.length - 1]);
}

/** Follows Link headers from `first`, checking each page holds at most `n` entries; returns them all in order. */
export async function walkPages(fetchPage: (path: string) => Promise<{ res: Response; entries: string[] }>, first: string, n: number) {
  const seen: string[] = [];
  let pages = 0;
  for (let path: string | undefined = first; path !== undefined; pages++) {
    const { res, entries } = await fetchPage(path);
    expect(entries.length).toBeLessThanOrEqual(n);
    seen.push(...entries);
    path = nextPage(res);
  }
  return { seen, pages };
}
