import { describe, expect, it } from 'vitest';
import { blob, randomBlob } from '../support/images.js';
import { MediaType } from '../../src/core/oci/media-types.js';
import { expectOciError, failOnServerErrors, guardedApp } from '../support/oci-errors.js';
import { expectNextLink, lexical, nextPage, walkPages } from '../support/paging.js';

/** GET /v2/<name>/tags/list[?n=&last=] (spec.md#listing-tags). */

failOnServerErrors();

type App = ReturnType<typeof guardedApp>;

/** A manifest that references nothing, so tagging it needs no blobs. */
const EMPTY_INDEX = blob(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [] }), MediaType.OciIndex);


async function withTags(tags: string[], name = 'repo'): Promise<App> {
  const t = guardedApp();
  for (const tag of tags) expect((await t.pushManifest(name, tag, EMPTY_INDEX)).status).toBe(201);
  return t;
}

async function list(t: App, path: string): Promise<{ res: Response; body: { name: string; tags: string[] } }> {
  const res = await t.request(path);
  expect(res.status, path).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^application\/json/);
  return { res, body: (await res.json()) as { name: string; tags: string[] } };
}

const TAGS = ['v1.0', 'latest', 'V2', '1', '_private', 'a-b', 'a.b', 'a_b', 'alpha', 'Alpha', '10', '2', 'test0', 'test1'];
const SORTED = [...TAGS].sort(lexical);

describe('listing tags', () => {
  it('lists every tag, sorted lexically, with the repository name', async () => {
    const t = await withTags(TAGS);
    const { res, body } = await list(t, '/v2/repo/tags/list');
    expect(body).toEqual({ name: 'repo', tags: SORTED });
    expect(SORTED.slice(0, 4)).toEqual(['1', '10', '2', 'Alpha']);
    expect(res.headers.get('link')).toBeNull();
  });

  it('names a multi-component repository in full', async () => {
    const t = await withTags(['x'], 'org/team/app');
    const { body } = await list(t, '/v2/org/team/app/tags/list');
    expect(body).toEqual({ name: 'org/team/app', tags: ['x'] });
  });

  it('a repository with blobs but no tags lists []', async () => {
    const t = guardedApp();
    await t.pushBlob('repo', randomBlob(10));
    const { body } = await list(t, '/v2/repo/tags/list');
    expect(body).toEqual({ name: 'repo', tags: [] });
  });

  it('a repository with only untagged manifests lists []', async () => {
    const t = guardedApp();
    expect((await t.pushManifest('repo', EMPTY_INDEX.digest, EMPTY_INDEX)).status).toBe(201);
    const { body } = await list(t, '/v2/repo/tags/list');
    expect(body.tags).toEqual([]);
  });

  it('HEAD answers 200 with no body', async () => {
    const t = await withTags(['a']);
    const res = await t.request('/v2/repo/tags/list', { method: 'HEAD' });
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('');
  });

  it('an unknown repository is 404 NAME_UNKNOWN', async () => {
    const t = await withTags(['a'], 'known');
    const error = await expectOciError(await t.request('/v2/unknown/tags/list'), { status: 404, code: 'NAME_UNKNOWN' });
    expect(error!.detail).toEqual({ name: 'unknown' });
  });

  it('an invalid repository name is 400 NAME_INVALID', async () => {
    const t = guardedApp();
    await expectOciError(await t.request('/v2/UPPER/tags/list'), { status: 400, code: 'NAME_INVALID' });
  });
});

describe('paging with n and last', () => {
  it.each([
    ['n=1', '?n=1', SORTED.slice(0, 1), true],
    ['n=5', '?n=5', SORTED.slice(0, 5), true],
    ['n equal to the count', `?n=${TAGS.length}`, SORTED, false],
    ['n above the count', '?n=1000', SORTED, false],
    ['n=0', '?n=0', [], false],
    ['an empty n is ignored', '?n=', SORTED, false],
    ['last alone', `?last=${SORTED[3]}`, SORTED.slice(4), false],
    ['last that is not a tag', '?last=b', SORTED.filter((x) => lexical(x, 'b') > 0), false],
    ['last after every tag', '?last=zzz', [], false],
    ['last before every tag', '?last=0', SORTED, false],
    ['n and last', `?n=3&last=${SORTED[2]}`, SORTED.slice(3, 6), true],
    ['n and last reaching the end', `?n=3&last=${SORTED[SORTED.length - 3]}`, SORTED.slice(-2), false],
    ['an empty last is ignored', '?n=2&last=', SORTED.slice(0, 2), true],
  ] as Array<[string, string, string[], boolean]>)('%s', async (_, query, expected, more) => {
    const t = await withTags(TAGS);
    const { res, body } = await list(t, `/v2/repo/tags/list${query}`);
    expect(body).toEqual({ name: 'repo', tags: expected });
    const last = new URLSearchParams(query).get('last');
    if (last) expect(body.tags).not.toContain(last);
    expectNextLink(res, '/v2/repo/tags/list', query, expected, more);
  });

  it.each([[1], [2], [3], [5], [13]])('following Link with n=%i walks every tag exactly once', async (n) => {
    const t = await withTags(TAGS);
    const { seen, pages } = await walkPages(
      async (path) => {
        const { res, body } = await list(t, path);
        return { res, entries: body.tags };
      },
      `/v2/repo/tags/list?n=${n}`,
      n,
    );
    expect(seen).toEqual(SORTED);
    expect(pages).toBe(Math.ceil(TAGS.length / n));
  });

  it('pages across more tags than one index listing returns', async () => {
    const tags = Array.from({ length: 1005 }, (_, i) => `t${String(i).padStart(4, '0')}`);
    const t = await withTags(tags);
    const { body } = await list(t, '/v2/repo/tags/list');
    expect(body.tags).toEqual(tags);
    const { res, body: page } = await list(t, '/v2/repo/tags/list?n=2&last=t0999');
    expect(page.tags).toEqual(['t1000', 't1001']);
    expect(new URL(nextPage(res)!, 'http://x').searchParams.get('last')).toBe('t1001');
  });

  it.each([['-1'], ['abc'], ['1.5'], ['1e3'], ['0x10'], ['9999999999']])('n=%s is 400', async (n) => {
    const t = await withTags(['a']);
    const error = await expectOciError(await t.request(`/v2/repo/tags/list?n=${n}`), { status: 400, code: 'UNSUPPORTED' });
    expect(error!.message).toMatch(/\bn\b/);
  });
});

describe('tags follow manifest changes', () => {
  it('a deleted tag leaves the list; a re-pushed tag appears once', async () => {
    const t = await withTags(['a', 'b', 'c']);
    expect((await t.request('/v2/repo/manifests/b', { method: 'DELETE' })).status).toBe(202);
    expect((await list(t, '/v2/repo/tags/list')).body.tags).toEqual(['a', 'c']);
    expect((await t.pushManifest('repo', 'a', EMPTY_INDEX)).status).toBe(201);
    expect((await list(t, '/v2/repo/tags/list')).body.tags).toEqual(['a', 'c']);
  });
});
