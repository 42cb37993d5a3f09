import { describe, expect, it } from 'vitest';
import { blob, image, randomBlob, sha256 } from '../support/images.js';
import { expectOciError, failOnServerErrors, guardedApp } from '../support/oci-errors.js';

/** GET/HEAD/DELETE /v2/<name>/blobs/<digest> (spec.md#pulling-blobs, #deleting-blobs). */

failOnServerErrors();

async function withBlob(size = 100, name = 'repo') {
  const t = guardedApp();
  const b = randomBlob(size);
  await t.pushBlob(name, b);
  return { ...t, b };
}

describe('pulling a blob', () => {
  it.each(['GET', 'HEAD'])('%s answers 200 with length, digest and range support', async (method) => {
    const { request, b } = await withBlob(100);
    const res = await request(`/v2/repo/blobs/${b.digest}`, { method });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-length')).toBe('100');
    expect(res.headers.get('docker-content-digest')).toBe(b.digest);
    expect(res.headers.get('accept-ranges')).toBe('bytes');
    expect(res.headers.get('content-type')).toBe('application/octet-stream');
    const bytes = Buffer.from(await res.arrayBuffer());
    if (method === 'GET') expect(bytes.equals(b.bytes)).toBe(true);
    else expect(bytes.byteLength).toBe(0);
  });

  it('serves a blob under a multi-component repository name', async () => {
    const { request, b } = await withBlob(10, 'org/team/app');
    const res = await request(`/v2/org/team/app/blobs/${b.digest}`);
    expect(res.status).toBe(200);
    expect(Buffer.from(await res.arrayBuffer()).equals(b.bytes)).toBe(true);
  });

  it('accepts a percent-encoded colon in the digest', async () => {
    const { request, b } = await withBlob(10);
    const res = await request(`/v2/repo/blobs/${b.digest.replace(':', '%3A')}`);
    expect(res.status).toBe(200);
    expect(res.headers.get('docker-content-digest')).toBe(b.digest);
  });

  it('serves a zero-byte blob', async () => {
    const { request, pushBlob } = guardedApp();
    const empty = blob('');
    await pushBlob('repo', empty);
    const res = await request(`/v2/repo/blobs/${empty.digest}`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-length')).toBe('0');
    expect((await res.arrayBuffer()).byteLength).toBe(0);
  });

  it('serves a sha512 blob pushed under its sha512 digest', async () => {
    const { request } = guardedApp();
    const bytes = Buffer.from('sha512 content');
    const { createHash } = await import('node:crypto');
    const digest = `sha512:${createHash('sha512').update(bytes).digest('hex')}`;
    const put = await request(`/v2/repo/blobs/uploads/?digest=${digest}`, { method: 'POST', body: bytes });
    expect(put.status).toBe(201);
    const res = await request(`/v2/repo/blobs/${digest}`);
    expect(res.status).toBe(200);
    expect(res.headers.get('docker-content-digest')).toBe(digest);
    expect(Buffer.from(await res.arrayBuffer()).equals(bytes)).toBe(true);
  });
});

describe('ranged GET', () => {
  // A 100-byte blob; [range header, first byte, last byte].
  it.each([
    ['bytes=0-9', 0, 9],
    ['bytes=10-19', 10, 19],
    ['bytes=99-99', 99, 99],
    ['bytes=90-', 90, 99],
    ['bytes=0-', 0, 99],
    ['bytes=-5', 95, 99],
    ['bytes=-100', 0, 99],
    ['bytes=-1000', 0, 99],
    ['bytes=50-1000', 50, 99],
  ])('%s answers 206 with bytes %i-%i', async (range, first, last) => {
    const { request, b } = await withBlob(100);
    const res = await request(`/v2/repo/blobs/${b.digest}`, { headers: { Range: range } });
    expect(res.status).toBe(206);
    expect(res.headers.get('content-range')).toBe(`bytes ${first}-${last}/100`);
    expect(res.headers.get('content-length')).toBe(String(last - first + 1));
    expect(res.headers.get('docker-content-digest')).toBe(b.digest);
    expect(res.headers.get('accept-ranges')).toBe('bytes');
    expect(Buffer.from(await res.arrayBuffer()).equals(b.bytes.subarray(first, last + 1))).toBe(true);
  });

  it.each([
    ['starting at the size', 100, 'bytes=100-'],
    ['starting past the size', 100, 'bytes=150-200'],
    ['an empty suffix', 100, 'bytes=-0'],
    ['any range of an empty blob', 0, 'bytes=0-'],
    ['a suffix of an empty blob', 0, 'bytes=-1'],
  ])('%s is 416 with Content-Range bytes */size', async (_, size, range) => {
    const { request, b } = await withBlob(size);
    const res = await request(`/v2/repo/blobs/${b.digest}`, { headers: { Range: range } });
    expect(res.headers.get('content-range')).toBe(`bytes */${size}`);
    const error = await expectOciError(res, { status: 416, code: 'SIZE_INVALID', message: String(size) });
    expect(error!.detail).toEqual({ size });
  });

  // RFC 9110 §14.2: a Range the server does not understand is ignored.
  it.each([['bytes=20-10'], ['items=0-9'], ['bytes=0-1,5-6'], ['bytes=-'], ['bytes=a-b']])(
    'an unusable Range %s is ignored: 200 with the whole blob',
    async (range) => {
      const { request, b } = await withBlob(100);
      const res = await request(`/v2/repo/blobs/${b.digest}`, { headers: { Range: range } });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-range')).toBeNull();
      expect(Buffer.from(await res.arrayBuffer()).equals(b.bytes)).toBe(true);
    },
  );

  it('HEAD ignores Range and reports the whole size', async () => {
    const { request, b } = await withBlob(100);
    const res = await request(`/v2/repo/blobs/${b.digest}`, { method: 'HEAD', headers: { Range: 'bytes=0-9' } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-length')).toBe('100');
  });
});

describe('blobs that are not in the repository', () => {
  it.each(['GET', 'HEAD'])('%s of a digest never pushed is 404 BLOB_UNKNOWN', async (method) => {
    const { request } = guardedApp();
    const digest = sha256('hello world');
    const res = await request(`/v2/repo/blobs/${digest}`, { method });
    await expectOciError(res, { status: 404, code: 'BLOB_UNKNOWN', head: method === 'HEAD' });
  });

  it.each(['GET', 'HEAD', 'DELETE'])('%s of a blob only linked into another repository is 404 BLOB_UNKNOWN', async (method) => {
    const { request, b } = await withBlob(10, 'other');
    const res = await request(`/v2/repo/blobs/${b.digest}`, { method });
    const error = await expectOciError(res, { status: 404, code: 'BLOB_UNKNOWN', head: method === 'HEAD' });
    if (error) expect(error.detail).toEqual({ digest: b.digest });
    expect((await request(`/v2/other/blobs/${b.digest}`, { method: 'HEAD' })).status).toBe(200);
  });

  it('a ranged GET of an unknown blob is 404, not 416', async () => {
    const { request } = guardedApp();
    const res = await request(`/v2/repo/blobs/${sha256('nope')}`, { headers: { Range: 'bytes=0-1' } });
    await expectOciError(res, { status: 404, code: 'BLOB_UNKNOWN' });
  });
});

describe('deleting a blob', () => {
  it('DELETE is 202, then GET, HEAD and DELETE are 404', async () => {
    const { request, b } = await withBlob(10);
    const del = await request(`/v2/repo/blobs/${b.digest}`, { method: 'DELETE' });
    expect(del.status).toBe(202);
    expect(await del.text()).toBe('');
    await expectOciError(await request(`/v2/repo/blobs/${b.digest}`), { status: 404, code: 'BLOB_UNKNOWN' });
    await expectOciError(await request(`/v2/repo/blobs/${b.digest}`, { method: 'HEAD' }), {
      status: 404,
      code: 'BLOB_UNKNOWN',
      head: true,
    });
    await expectOciError(await request(`/v2/repo/blobs/${b.digest}`, { method: 'DELETE' }), { status: 404, code: 'BLOB_UNKNOWN' });
  });

  it('removes the blob from one repository only', async () => {
    const { request, pushBlob, b } = await withBlob(10, 'one');
    await pushBlob('two', b);
    expect((await request(`/v2/one/blobs/${b.digest}`, { method: 'DELETE' })).status).toBe(202);
    expect((await request(`/v2/one/blobs/${b.digest}`)).status).toBe(404);
    expect((await request(`/v2/two/blobs/${b.digest}`)).status).toBe(200);
  });

  it('can be pushed again after being deleted', async () => {
    const { request, pushBlob, b } = await withBlob(10);
    expect((await request(`/v2/repo/blobs/${b.digest}`, { method: 'DELETE' })).status).toBe(202);
    await pushBlob('repo', b);
    expect((await request(`/v2/repo/blobs/${b.digest}`)).status).toBe(200);
  });

  it('deleting a manifest leaves its blobs in place', async () => {
    const { request, pushImage } = guardedApp();
    const img = image();
    await pushImage('repo', img);
    expect((await request(`/v2/repo/manifests/${img.manifest.digest}`, { method: 'DELETE' })).status).toBe(202);
    for (const b of [img.config, ...img.layers]) {
      expect((await request(`/v2/repo/blobs/${b.digest}`, { method: 'HEAD' })).status).toBe(200);
      expect((await request(`/v2/repo/blobs/${b.digest}`, { method: 'DELETE' })).status).toBe(202);
    }
  });
});

describe('invalid digests are 400 DIGEST_INVALID', () => {
  const hex = 'a'.repeat(64);
  const digests = [
    ['no algorithm', 'notadigest'],
    ['a short sha256', 'sha256:abc'],
    ['a long sha256', `sha256:${hex}a`],
    ['upper-case hex', `sha256:${hex.toUpperCase()}`],
    ['non-hex', `sha256:${'g'.repeat(64)}`],
    ['a sha512 of sha256 length', `sha512:${hex}`],
    ['an unsupported algorithm', `md5:${'a'.repeat(32)}`],
    ['an unregistered algorithm of the right length', `sha384:${hex}`],
    ['an empty encoded part', 'sha256:'],
  ];
  for (const method of ['GET', 'HEAD', 'DELETE']) {
    it.each(digests)(`${method} with %s`, async (_, digest) => {
      const { request } = guardedApp();
      const res = await request(`/v2/repo/blobs/${encodeURIComponent(digest)}`, { method });
      await expectOciError(res, { status: 400, code: 'DIGEST_INVALID', head: method === 'HEAD' });
    });
  }

  it('the message says what was wrong', async () => {
    const { request } = guardedApp();
    const res = await request('/v2/repo/blobs/sha256:abc');
    await expectOciError(res, { status: 400, code: 'DIGEST_INVALID', message: /64/ });
  });
});

describe('invalid repository names are 400 NAME_INVALID', () => {
  const digest = sha256('x');
  it.each([
    ['upper case', 'Repo'],
    ['a leading dash', '-repo'],
    ['a trailing dot', 'repo.'],
    ['a double slash', 'a//b'],
    ['a colon', 'repo:tag'],
    ['too long', 'a'.repeat(256)],
  ])('%s: %s', async (_, name) => {
    for (const method of ['GET', 'HEAD', 'DELETE']) {
      const { request } = guardedApp();
      const res = await request(`/v2/${name}/blobs/${digest}`, { method });
      await expectOciError(res, { status: 400, code: 'NAME_INVALID', head: method === 'HEAD' });
    }
  });
});

describe('store round trips', () => {
  it('HEAD answers from the index alone, and GET makes a single store request', async () => {
    const t = guardedApp();
    const b = randomBlob(100);
    await t.pushBlob('repo', b);
    const calls: string[] = [];
    const { stat, get } = t.store;
    t.store.stat = async (key) => (calls.push('stat'), stat.call(t.store, key));
    t.store.get = async (key, range) => (calls.push('get'), get.call(t.store, key, range));
    expect((await t.request(`/v2/repo/blobs/${b.digest}`, { method: 'HEAD' })).status).toBe(200);
    expect(calls).toEqual([]);
    const res = await t.request(`/v2/repo/blobs/${b.digest}`, { headers: { Range: 'bytes=10-19' } });
    expect(res.status).toBe(206);
    expect(new Uint8Array(await res.arrayBuffer())).toEqual(new Uint8Array(b.bytes.subarray(10, 20)));
    expect(calls).toEqual(['get']);
  });
});
