import { describe, expect, it } from 'vitest';
import { randomBlob, sha256 } from '../support/images.js';
import { expectOciError, failOnServerErrors, guardedApp } from '../support/oci-errors.js';
import { expectCreated, expectNotVisible, finish } from '../support/uploads.js';

/**
 * POST /v2/<name>/blobs/uploads/?mount=<digest>&from=<other> (spec.md#mounting-a-blob-from-another-repository):
 * 201 when `from` (or the target itself) holds the blob; otherwise 202 with a fresh upload session,
 * revealing nothing about other repositories. Malformed parameters are refused.
 */

failOnServerErrors();

describe('cross-repository mount: POST ?mount=&from=', () => {
  it('mounting from a repository that has the blob is 201 with Location and Docker-Content-Digest', async () => {
    const t = guardedApp();
    const b = randomBlob(42);
    await t.pushBlob('source/repo', b);
    const res = await t.request(`/v2/target/blobs/uploads/?mount=${b.digest}&from=${encodeURIComponent('source/repo')}`, {
      method: 'POST',
      headers: { 'Content-Length': '0' },
    });
    await expectCreated(t, res, 'target', b);
    // Each repository holds its own link: deleting one leaves the other.
    expect((await t.request(`/v2/target/blobs/${b.digest}`, { method: 'DELETE' })).status).toBe(202);
    expect((await t.request(`/v2/source/repo/blobs/${b.digest}`)).status).toBe(200);
  });

  it('mounting a blob the target already has is 201', async () => {
    const t = guardedApp();
    const b = randomBlob(10);
    await t.pushBlob('source', b);
    await t.pushBlob('target', b);
    const res = await t.request(`/v2/target/blobs/uploads/?mount=${b.digest}&from=source`, { method: 'POST' });
    await expectCreated(t, res, 'target', b);
  });

  it.each([
    ['a repository lacking the blob', 'empty'],
    ['a repository that does not exist', 'nowhere'],
  ])('mounting from %s is 202 with an upload session', async (_, from) => {
    const t = guardedApp();
    const b = randomBlob(42);
    await t.pushBlob('source', b);
    await t.pushBlob('empty', randomBlob(5));
    const res = await t.request(`/v2/target/blobs/uploads/?mount=${b.digest}&from=${from}`, { method: 'POST' });
    expect(res.status).toBe(202);
    const location = res.headers.get('location')!;
    expect(location.startsWith('/v2/target/blobs/uploads/')).toBe(true);
    await expectNotVisible(t, 'target', b.digest);
    await expectCreated(t, await finish(t, location, b.digest, b.bytes), 'target', b);
  });

  it('mounting an unknown digest without from is 202 with an upload session', async () => {
    const t = guardedApp();
    const res = await t.request(`/v2/target/blobs/uploads/?mount=${sha256('hello world')}`, { method: 'POST' });
    expect(res.status).toBe(202);
    expect(res.headers.get('location')!.startsWith('/v2/target/blobs/uploads/')).toBe(true);
  });

  it('mounting without from is 202 even when another repository has the blob (nothing is revealed across repositories)', async () => {
    const t = guardedApp();
    const b = randomBlob(10);
    await t.pushBlob('source', b);
    const res = await t.request(`/v2/target/blobs/uploads/?mount=${b.digest}`, { method: 'POST' });
    expect(res.status).toBe(202);
    expect(res.headers.get('location')!.startsWith('/v2/target/blobs/uploads/')).toBe(true);
    await expectNotVisible(t, 'target', b.digest);
  });

  it.each([
    ['an invalid mount digest', 'mount=sha256:zz&from=source', 400, 'DIGEST_INVALID'],
    ['an invalid from name', `mount=${sha256('x')}&from=Not_Valid`, 400, 'NAME_INVALID'],
  ])('%s is refused', async (_, query, status, code) => {
    const t = guardedApp();
    await expectOciError(await t.request(`/v2/target/blobs/uploads/?${query}`, { method: 'POST' }), { status, code });
  });
});
