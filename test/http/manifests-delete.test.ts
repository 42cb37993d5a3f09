import { describe, expect, it } from 'vitest';
import { image, index, sha256 } from '../support/images.js';
import { expectCreated, expectPulled, expectUnknown, put } from '../support/manifests.js';
import { MediaType } from '../../src/core/oci/media-types.js';
import { expectOciError, failOnServerErrors, guardedApp } from '../support/oci-errors.js';
import { testApp } from '../support/app.js';
import type { ItemKey } from '../../src/ports/meta-index.js';

/** DELETE /v2/<name>/manifests/<reference> (spec.md#deleting-manifests): by digest, by tag, and what is left. */

failOnServerErrors();

const { OciManifest: OCI_MANIFEST, OciIndex: OCI_INDEX } = MediaType;

describe('deleting manifests', () => {
  it('DELETE by digest is 202; then GET by digest and by every tag is 404 MANIFEST_UNKNOWN', async () => {
    const t = guardedApp();
    const img = image();
    const keep = image();
    await t.pushImage('repo', img, 'a');
    await t.pushImage('repo', img, 'b');
    await t.pushImage('repo', keep, 'c');
    const res = await t.request(`/v2/repo/manifests/${img.manifest.digest}`, { method: 'DELETE' });
    expect(res.status).toBe(202);
    expect(await res.text()).toBe('');
    await expectUnknown(t, 'repo', img.manifest.digest);
    await expectUnknown(t, 'repo', 'a');
    await expectUnknown(t, 'repo', 'b');
    await expectPulled(t, 'repo', 'c', keep.manifest);
    const tags = (await (await t.request('/v2/repo/tags/list')).json()) as { tags: string[] };
    expect(tags.tags).toEqual(['c']);
  });

  it('DELETE by tag is 202 and removes only that tag', async () => {
    const t = guardedApp();
    const img = image();
    await t.pushImage('repo', img, 'a');
    await t.pushImage('repo', img, 'b');
    const res = await t.request('/v2/repo/manifests/a', { method: 'DELETE' });
    expect(res.status).toBe(202);
    await expectUnknown(t, 'repo', 'a');
    await expectPulled(t, 'repo', 'b', img.manifest);
    await expectPulled(t, 'repo', img.manifest.digest, img.manifest);
  });

  it('the tag list shrinks and stays 200 when the last tag goes', async () => {
    const t = guardedApp();
    const img = image();
    await t.pushImage('repo', img, 'tagtest0');
    expect((await t.request('/v2/repo/manifests/tagtest0', { method: 'DELETE' })).status).toBe(202);
    expect((await t.request(`/v2/repo/manifests/${img.manifest.digest}`, { method: 'DELETE' })).status).toBe(202);
    const res = await t.request('/v2/repo/tags/list');
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ name: 'repo', tags: [] });
  });

  it.each([
    ['an unknown tag', 'nope'],
    ['an unknown digest', sha256('hello world')],
  ])('DELETE of %s is 404 MANIFEST_UNKNOWN', async (_, reference) => {
    const t = guardedApp();
    await t.pushImage('repo', image());
    await expectOciError(await t.request(`/v2/repo/manifests/${reference}`, { method: 'DELETE' }), { status: 404, code: 'MANIFEST_UNKNOWN' });
  });

  it('a second DELETE by digest is 404', async () => {
    const t = guardedApp();
    const img = image();
    await t.pushImage('repo', img);
    expect((await t.request(`/v2/repo/manifests/${img.manifest.digest}`, { method: 'DELETE' })).status).toBe(202);
    await expectOciError(await t.request(`/v2/repo/manifests/${img.manifest.digest}`, { method: 'DELETE' }), {
      status: 404,
      code: 'MANIFEST_UNKNOWN',
    });
  });

  it('a deleted manifest can be pushed again', async () => {
    const t = guardedApp();
    const img = image();
    await t.pushImage('repo', img);
    expect((await t.request(`/v2/repo/manifests/${img.manifest.digest}`, { method: 'DELETE' })).status).toBe(202);
    await expectCreated(await put(t, 'repo', 'latest', img.manifest.bytes, OCI_MANIFEST), 'repo', img.manifest);
    await expectPulled(t, 'repo', 'latest', img.manifest);
  });

  it('a manifest an index refers to may be deleted (the conformance teardown does), the index stays', async () => {
    const t = guardedApp();
    const child = image();
    await t.pushImage('repo', child, child.manifest.digest);
    const idx = index([{ manifest: child.manifest, arch: 'amd64' }]);
    await expectCreated(await put(t, 'repo', 'multi', idx.bytes, OCI_INDEX), 'repo', idx);
    expect((await t.request(`/v2/repo/manifests/${child.manifest.digest}`, { method: 'DELETE' })).status).toBe(202);
    await expectUnknown(t, 'repo', child.manifest.digest);
    await expectPulled(t, 'repo', 'multi', idx);
  });

  it('deleting from one repository leaves the same manifest in another', async () => {
    const t = guardedApp();
    const img = image();
    await t.pushImage('one', img);
    await t.pushImage('two', img);
    expect((await t.request(`/v2/one/manifests/${img.manifest.digest}`, { method: 'DELETE' })).status).toBe(202);
    await expectUnknown(t, 'one', 'latest');
    await expectPulled(t, 'two', 'latest', img.manifest);
  });
});

describe('DELETE racing a push of the same manifest', () => {
  it('leaves the manifest and its new tag when the push lands between the read and the delete', async () => {
    const t = testApp();
    const img = image();
    await t.pushImage('repo', img, 'v1');
    const get = t.index.get.bind(t.index);
    let raced = false;
    t.index.get = (async (key: ItemKey) => {
      const item = await get(key);
      if (!raced && key.pk === 'manifest#repo') {
        raced = true;
        // The concurrent PUT: it rewrites the record and tags the manifest anew.
        expect((await t.pushManifest('repo', 'v2', img.manifest)).status).toBe(201);
      }
      return item;
    }) as typeof t.index.get;
    const res = await t.request(`/v2/repo/manifests/${img.manifest.digest}`, { method: 'DELETE' });
    expect(res.status).toBe(404);
    expect((await t.request(`/v2/repo/manifests/${img.manifest.digest}`)).status).toBe(200);
    expect((await t.request('/v2/repo/manifests/v2')).status).toBe(200);
  });
});
