import { describe, expect, it } from 'vitest';
import { Auth } from '../../src/core/auth/auth.js';
import { CATALOG_SCAN_ENTRIES } from '../../src/core/registry/catalog.js';
import { keys } from '../../src/core/registry/keys.js';
import { MAX_PAGE_ENTRIES } from '../../src/core/registry/pages.js';
import { authConfig, basic, rule, testConnection, user } from '../support/auth.js';
import { MemoryMetaIndex } from '../../src/adapters/memory/meta-index.js';
import { testApp, TestClock } from '../support/app.js';
import { randomBlob } from '../support/images.js';
import { lexical, nextPage } from '../support/paging.js';

/**
 * Paging the catalog when the rules hide some repositories (src/core/registry/catalog.ts): the
 * filter runs inside the page, so a page is full, its `Link: last=` is a name the caller may
 * see, and no walk through the pages ever names a hidden repository; a request examines at most
 * CATALOG_SCAN_ENTRIES names. Which repositories each caller sees: auth-protection.test.ts.
 */

const ADMIN = basic('admin', 'admin-pw');
const READER = basic('reader', 'reader-pw');

/** Anonymous callers pull pub-*; reader pulls pub-* and team-*; admin everything. */
const auth = Auth.create(
  authConfig({
    users: await Promise.all([user('admin', 'admin-pw'), user('reader', 'reader-pw')]),
    rules: [
      rule(['pub-*/**'], { anonymous: true }, ['pull']),
      rule(['team-*/**'], { users: ['reader'] }, ['pull']),
      rule(['**'], { users: ['admin'] }, ['pull', 'push']),
    ],
  }),
);

function app() {
  return testApp({}, { auth, connection: testConnection });
}

// Hidden names between, before and after the visible ones, and runs of them longer than a page.
const REPOS = ['a-hidden/x', 'pub-1/x', 'hidden-1/x', 'hidden-2/x', 'hidden-3/x', 'pub-2/x', 'team-1/x', 'pub-3/a', 'pub-3/b', 'q-hidden/x', 'team-2/x', 'pub-4/x', 'z-hidden/x'].sort(lexical);
const ANONYMOUS_SEES = REPOS.filter((r) => r.startsWith('pub-'));
const READER_SEES = REPOS.filter((r) => r.startsWith('pub-') || r.startsWith('team-'));

async function seeded() {
  const t = app();
  for (const name of REPOS) {
    const b = randomBlob(8);
    const res = await t.request(`/v2/${name}/blobs/uploads/?digest=${b.digest}`, { method: 'POST', body: new Uint8Array(b.bytes), headers: { ...ADMIN, 'Content-Length': String(b.size) } });
    expect(res.status).toBe(201);
  }
  return t;
}

/** Follows the Link headers from `first`; returns every page's names and every Link's `last`. */
async function walk(t: ReturnType<typeof app>, first: string, headers: Record<string, string> = {}) {
  const pages: string[][] = [];
  const cursors: string[] = [];
  for (let path: string | undefined = first; path !== undefined; ) {
    expect(pages.length, 'the walk ends').toBeLessThan(50);
    const res = await t.request(path, { headers });
    expect(res.status).toBe(200);
    pages.push(((await res.json()) as { repositories: string[] }).repositories);
    path = nextPage(res);
    if (path) cursors.push(new URL(path, 'http://outpost').searchParams.get('last')!);
  }
  return { pages, cursors };
}

describe('catalog pages under the rules', () => {
  it.each([[1], [2], [3], [100]])('anonymous, n=%i: every page full, every Link names a visible repository, no hidden name ever', async (n) => {
    const t = await seeded();
    const { pages, cursors } = await walk(t, `/v2/_catalog?n=${n}`);
    expect(pages.flat()).toEqual(ANONYMOUS_SEES);
    for (const page of pages.slice(0, -1)) expect(page).toHaveLength(n);
    expect(pages.at(-1)!.length).toBeGreaterThan(0);
    expect(pages).toHaveLength(Math.ceil(ANONYMOUS_SEES.length / n));
    for (const last of cursors) expect(ANONYMOUS_SEES).toContain(last);
  });

  it('a signed-in reader walks its own view the same way; admin sees every repository', async () => {
    const t = await seeded();
    const reader = await walk(t, '/v2/_catalog?n=2', READER);
    expect(reader.pages.flat()).toEqual(READER_SEES);
    for (const page of reader.pages.slice(0, -1)) expect(page).toHaveLength(2);
    for (const last of reader.cursors) expect(READER_SEES).toContain(last);
    expect((await walk(t, '/v2/_catalog?n=4', ADMIN)).pages.flat()).toEqual(REPOS);
  });

  it('a `last` the caller chose itself (a hidden name) pages on from there, naming only visible repositories', async () => {
    const t = await seeded();
    const { pages, cursors } = await walk(t, `/v2/_catalog?n=1&last=${encodeURIComponent('hidden-2/x')}`);
    expect(pages.flat()).toEqual(ANONYMOUS_SEES.filter((r) => lexical(r, 'hidden-2/x') > 0));
    for (const last of cursors) expect(ANONYMOUS_SEES).toContain(last);
  });

  // Seeded straight into the repos partition: 10,000 pushes would take minutes.
  it(`past ${CATALOG_SCAN_ENTRIES} hidden names the listing ends, naming none of them`, async () => {
    const index = new MemoryMetaIndex(new TestClock());
    const at = { created: 0 };
    await index.put(keys.repo('b-pub/before'), at);
    for (let i = 0; i < CATALOG_SCAN_ENTRIES + 5; i++) await index.put(keys.repo(`c-hidden/${String(i).padStart(6, '0')}`), at);
    await index.put(keys.repo('pub-z/after'), at);
    const rules = [rule(['*-pub/**', 'pub-*/**'], { anonymous: true }, ['pull']), rule(['**'], { users: ['admin'] }, ['pull'])];
    const local = testApp({}, { auth: Auth.create(authConfig({ users: [await user('admin', 'admin-pw')], rules })), connection: testConnection, index });

    for (const first of ['/v2/_catalog', '/v2/_catalog?n=1', `/v2/_catalog?n=1&last=${encodeURIComponent('b-pub/before')}`]) {
      const { pages, cursors } = await walk(local, first);
      const text = JSON.stringify({ pages, cursors });
      expect(text, first).not.toContain('c-hidden');
      // What lies past the cap is not listed to this caller: the visible name after it included.
      expect(pages.flat(), first).toEqual(first.includes('last=') ? [] : ['b-pub/before']);
      expect(cursors.every((c) => c === 'b-pub/before'), first).toBe(true);
    }
    // Unfiltered (admin), everything is listed and paged as usual.
    const all = await local.request('/v2/_catalog', { headers: ADMIN });
    const listed = ((await all.json()) as { repositories: string[] }).repositories;
    expect(listed).toHaveLength(MAX_PAGE_ENTRIES);
    expect(listed[0]).toBe('b-pub/before');
    expect(nextPage(all)).toMatch(/last=c-hidden/);
  });
});
