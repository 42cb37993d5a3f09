import { describe, expect, it } from 'vitest';
import { blob, image, randomBlob } from '../support/images.js';
import { expectOciError, failOnServerErrors, guardedApp } from '../support/oci-errors.js';
import { expectNextLink, lexical, walkPages } from '../support/paging.js';

/** GET /v2/_catalog[?n=&last=] (Distribution's catalog API, paged like tags). */

failOnServerErrors();

type App = ReturnType<typeof guardedApp>;

const REPOS = ['zeta', 'alpha', 'alpha/beta', 'alpha-beta', 'alpha.beta', 'alpha_beta', '0day', 'org/team/app', 'b'];
const SORTED = [...REPOS].sort(lexical);

async function withRepos(repos = REPOS): Promise<App> {
  const t = guardedApp();
  for (const name of repos) await t.pushBlob(name, randomBlob(8));
  return t;
}

async function catalog(t: App, query = ''): Promise<{ res: Response; repositories: string[] }> {
  const res = await t.request(`/v2/_catalog${query}`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^application\/json/);
  const body = (await res.json()) as { repositories: string[] };
  expect(Object.keys(body)).toEqual(['repositories']);
  return { res, repositories: body.repositories };
}

describe('listing repositories', () => {
  it('an empty registry lists []', async () => {
    const { repositories, res } = await catalog(guardedApp());
    expect(repositories).toEqual([]);
    expect(res.headers.get('link')).toBeNull();
  });

  it('lists every repository once, sorted lexically', async () => {
    const t = await withRepos();
    await t.pushBlob('zeta', randomBlob(8));
    const { repositories } = await catalog(t);
    expect(repositories).toEqual(SORTED);
    expect(SORTED.slice(0, 3)).toEqual(['0day', 'alpha', 'alpha-beta']);
  });

  it('a repository appears when a manifest or a mounted blob is pushed into it', async () => {
    const t = guardedApp();
    await t.pushImage('images', image());
    const b = blob('mounted');
    await t.pushBlob('source', b);
    expect((await t.request(`/v2/mounted/blobs/uploads/?mount=${b.digest}&from=source`, { method: 'POST' })).status).toBe(201);
    expect((await catalog(t)).repositories).toEqual(['images', 'mounted', 'source']);
  });

  it('a repository with only an open upload is not listed', async () => {
    const t = guardedApp();
    expect((await t.request('/v2/pending/blobs/uploads/', { method: 'POST' })).status).toBe(202);
    expect((await catalog(t)).repositories).toEqual([]);
  });

  it('a failed push does not create a repository', async () => {
    const t = guardedApp();
    const b = randomBlob(10);
    const res = await t.request(`/v2/failed/blobs/uploads/?digest=${randomBlob(10).digest}`, { method: 'POST', body: new Uint8Array(b.bytes) });
    await expectOciError(res, { status: 400, code: 'DIGEST_INVALID' });
    const img = image();
    await expectOciError(await t.pushManifest('failed', 'v1', img.manifest), { status: 400, code: 'MANIFEST_BLOB_UNKNOWN' });
    expect((await catalog(t)).repositories).toEqual([]);
  });

  it('HEAD answers 200 with no body', async () => {
    const t = await withRepos(['a']);
    const res = await t.request('/v2/_catalog', { method: 'HEAD' });
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('');
  });
});

describe('paging with n and last', () => {
  it.each([
    ['n=1', '?n=1', SORTED.slice(0, 1), true],
    ['n=4', '?n=4', SORTED.slice(0, 4), true],
    ['n equal to the count', `?n=${REPOS.length}`, SORTED, false],
    ['n above the count', '?n=100', SORTED, false],
    ['n=0', '?n=0', [], false],
    ['last alone', '?last=alpha', SORTED.slice(SORTED.indexOf('alpha') + 1), false],
    ['last with a slash', `?last=${encodeURIComponent('alpha/beta')}`, SORTED.slice(SORTED.indexOf('alpha/beta') + 1), false],
    ['last that is not a repository', '?last=c', SORTED.filter((x) => lexical(x, 'c') > 0), false],
    ['n and last', '?n=2&last=alpha', SORTED.slice(SORTED.indexOf('alpha') + 1, SORTED.indexOf('alpha') + 3), true],
  ] as Array<[string, string, string[], boolean]>)('%s', async (_, query, expected, more) => {
    const t = await withRepos();
    const { res, repositories } = await catalog(t, query);
    expect(repositories).toEqual(expected);
    expectNextLink(res, '/v2/_catalog', query, expected, more);
  });

  it.each([[1], [2], [4], [9]])('following Link with n=%i walks every repository exactly once', async (n) => {
    const t = await withRepos();
    const { seen } = await walkPages(
      async (path) => {
        const { res, repositories } = await catalog(t, path.slice(path.indexOf('?')));
        return { res, entries: repositories };
      },
      `/v2/_catalog?n=${n}`,
      n,
    );
    expect(seen).toEqual(SORTED);
  });

  it.each([['-1'], ['x'], ['2.5'], ['9999999999']])('n=%s is 400', async (n) => {
    const t = await withRepos(['a']);
    await expectOciError(await t.request(`/v2/_catalog?n=${n}`), { status: 400, code: 'UNSUPPORTED', message: /\bn\b/ });
  });
});
