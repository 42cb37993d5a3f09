import { HeadObjectCommand, ListMultipartUploadsCommand } from '@aws-sdk/client-s3';
import { env, exports } from 'cloudflare:workers';
import { beforeAll, describe, expect, it } from 'vitest';
import { parseDigest } from '../../src/core/oci/digest.js';
import { objects } from '../../src/core/registry/keys.js';
import { artifact, blob, descriptor, image, index, randomBlob, type Blob, type Image } from '../support/images.js';
import { expectOciError } from '../support/oci-errors.js';
import { digestStream, generated } from './content.js';
import { bindingsS3 } from './s3.js';

/**
 * The Workers entry inside workerd, end to end: every request goes through
 * `exports.default.fetch` (the Worker wrangler.toml names, with its bindings) to a real S3
 * (Ceph RGW) and a real DynamoDB (dynalite) on loopback. Blobs larger than a part (8 MiB)
 * are generated as streams and sent without Content-Length, so S3 multipart uploads run from
 * inside workerd; nothing here holds such a blob whole.
 */

const ORIGIN = 'http://outpost.test';
const PART = 8 * 1024 * 1024;
const repo = `workerd/${crypto.randomUUID().slice(0, 8)}/app`;

function request(path: string, init?: RequestInit): Promise<Response> {
  return exports.default.fetch(`${ORIGIN}${path}`, init);
}

/** workerd's WebCrypto, independent of the node:crypto hashing the Worker itself uses. */
async function sha256(bytes: ArrayBuffer): Promise<string> {
  const hash = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  return `sha256:${Array.from(hash, (b) => b.toString(16).padStart(2, '0')).join('')}`;
}

/** The store, looked at directly (from workerd too): how many parts S3 made an object of. */
const bucket = String(env.OUTPOST_S3_BUCKET);
const s3 = bindingsS3();

/** A multipart object's ETag is "<md5 of the part md5s>-<parts>"; a single PUT's has no suffix. */
async function s3Parts(digest: string): Promise<number> {
  const out = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: objects.content(parseDigest(digest)) }));
  return Number(/-(\d+)"?$/.exec(out.ETag ?? '')?.[1] ?? 1);
}

async function openMultipartUploads(digest: string): Promise<number> {
  const out = await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: objects.content(parseDigest(digest)) }));
  return out.Uploads?.length ?? 0;
}

async function pushBlob(b: Blob): Promise<void> {
  const res = await request(`/v2/${repo}/blobs/uploads/?digest=${b.digest}`, {
    method: 'POST',
    body: new Uint8Array(b.bytes),
    headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': String(b.size) },
  });
  expect(res.status, await res.text()).toBe(201);
}

async function pushManifest(reference: string, m: Blob): Promise<Response> {
  return request(`/v2/${repo}/manifests/${reference}`, {
    method: 'PUT',
    body: new Uint8Array(m.bytes),
    headers: { 'Content-Type': m.mediaType },
  });
}

async function pushImage(img: Image, reference: string): Promise<void> {
  for (const b of [img.config, ...img.layers]) await pushBlob(b);
  const res = await pushManifest(reference, img.manifest);
  expect(res.status, await res.text()).toBe(201);
  expect(res.headers.get('Docker-Content-Digest')).toBe(img.manifest.digest);
}

async function startUpload(): Promise<string> {
  const res = await request(`/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  expect(res.status).toBe(202);
  return res.headers.get('Location')!;
}

beforeAll(() => {
  // The bindings the project config adds on top of wrangler.toml's [vars].
  expect(env.OUTPOST_STORE).toBe('cloud');
  expect(env.OUTPOST_S3_ENDPOINT).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
  expect(env.OUTPOST_DYNAMODB_ENDPOINT).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
  expect(env.OUTPOST_S3_BUCKET).toMatch(/^outpost-workerd-/);
});

describe('Outpost on workerd over S3 and DynamoDB', () => {
  it('answers the API version check', async () => {
    const res = await request('/v2/');
    expect(res.status).toBe(200);
    expect(res.headers.get('Docker-Distribution-API-Version')).toBe('registry/2.0');
    expect(navigator.userAgent).toBe('Cloudflare-Workers');
  });

  it('pushes a blob monolithically and pulls it back whole, by HEAD and by range', async () => {
    const b = randomBlob(100_000);
    await pushBlob(b);

    const head = await request(`/v2/${repo}/blobs/${b.digest}`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('Content-Length')).toBe(String(b.size));
    expect(head.headers.get('Docker-Content-Digest')).toBe(b.digest);

    const get = await request(`/v2/${repo}/blobs/${b.digest}`);
    expect(get.status).toBe(200);
    expect(await sha256(await get.arrayBuffer())).toBe(b.digest);

    const part = await request(`/v2/${repo}/blobs/${b.digest}`, { headers: { Range: 'bytes=1000-1999' } });
    expect(part.status).toBe(206);
    expect(part.headers.get('Content-Range')).toBe(`bytes 1000-1999/${b.size}`);
    expect(new Uint8Array(await part.arrayBuffer())).toEqual(new Uint8Array(b.bytes.subarray(1000, 2000)));
  });

  it('pushes a blob in chunks with Content-Range, refusing a chunk at the wrong offset', async () => {
    const b = randomBlob(300_000);
    const chunks = [b.bytes.subarray(0, 120_000), b.bytes.subarray(120_000, 250_000)];
    let location = await startUpload();
    let offset = 0;
    for (const chunk of chunks) {
      const res = await request(location, {
        method: 'PATCH',
        body: new Uint8Array(chunk),
        headers: {
          'Content-Type': 'application/octet-stream',
          'Content-Range': `${offset}-${offset + chunk.byteLength - 1}`,
          'Content-Length': String(chunk.byteLength),
        },
      });
      expect(res.status, await res.text()).toBe(202);
      offset += chunk.byteLength;
      expect(res.headers.get('Range')).toBe(`0-${offset - 1}`);
      location = res.headers.get('Location')!;
    }

    const wrong = await request(location, {
      method: 'PATCH',
      body: new Uint8Array(10),
      headers: { 'Content-Range': '0-9', 'Content-Length': '10' },
    });
    await expectOciError(wrong, { status: 416, code: 'BLOB_UPLOAD_INVALID' });
    expect(wrong.headers.get('Range')).toBe(`0-${offset - 1}`);

    const status = await request(location);
    expect(status.status).toBe(204);
    expect(status.headers.get('Range')).toBe(`0-${offset - 1}`);

    const last = b.bytes.subarray(offset);
    const done = await request(`${location}?digest=${b.digest}`, {
      method: 'PUT',
      body: new Uint8Array(last),
      headers: { 'Content-Range': `${offset}-${b.size - 1}`, 'Content-Length': String(last.byteLength) },
    });
    expect(done.status, await done.text()).toBe(201);
    expect(done.headers.get('Docker-Content-Digest')).toBe(b.digest);

    const get = await request(`/v2/${repo}/blobs/${b.digest}`);
    expect(await sha256(await get.arrayBuffer())).toBe(b.digest);
  });

  it('moves a single-chunk upload into place and cancels another', async () => {
    const b = randomBlob(50_000);
    const location = await startUpload();
    const patch = await request(location, { method: 'PATCH', body: new Uint8Array(b.bytes) });
    expect(patch.status).toBe(202);
    const done = await request(`${location}?digest=${b.digest}`, { method: 'PUT' });
    expect(done.status, await done.text()).toBe(201);
    expect(await sha256(await (await request(`/v2/${repo}/blobs/${b.digest}`)).arrayBuffer())).toBe(b.digest);
    expect(await s3Parts(b.digest)).toBe(1);

    const cancelled = await startUpload();
    expect((await request(cancelled, { method: 'DELETE' })).status).toBe(204);
    const gone = await request(cancelled);
    await expectOciError(gone, { status: 404, code: 'BLOB_UPLOAD_UNKNOWN' });
  });

  it('streams a blob of several S3 parts in, without Content-Length, and back out', async () => {
    const big = generated(2 * PART + 12_345, 1);
    const res = await request(`/v2/${repo}/blobs/uploads/?digest=${big.digest}`, { method: 'POST', body: big.stream() });
    expect(res.status, await res.text()).toBe(201);

    const head = await request(`/v2/${repo}/blobs/${big.digest}`, { method: 'HEAD' });
    expect(head.headers.get('Content-Length')).toBe(String(big.size));
    expect(await s3Parts(big.digest)).toBe(3);

    const get = await request(`/v2/${repo}/blobs/${big.digest}`);
    expect(get.status).toBe(200);
    expect(get.headers.get('Content-Length')).toBe(String(big.size));
    expect(await digestStream(get.body!)).toEqual({ digest: big.digest, size: big.size });

    // A range across the boundary of the first two parts, and the last bytes of the last.
    const start = PART - 1000;
    const part = await request(`/v2/${repo}/blobs/${big.digest}`, { headers: { Range: `bytes=${start}-${start + 1999}` } });
    expect(part.status).toBe(206);
    expect(new Uint8Array(await part.arrayBuffer())).toEqual(big.slice(start, 2000));
    const tail = await request(`/v2/${repo}/blobs/${big.digest}`, { headers: { Range: 'bytes=-100' } });
    expect(tail.status).toBe(206);
    expect(tail.headers.get('Content-Range')).toBe(`bytes ${big.size - 100}-${big.size - 1}/${big.size}`);
    expect(new Uint8Array(await tail.arrayBuffer())).toEqual(big.slice(big.size - 100, 100));
  });

  it('takes several multi-part pushes at once in one isolate', async () => {
    const blobs = [5, 6, 7].map((seed) => generated(PART + seed * 100_000, seed));
    const pushed = await Promise.all(
      blobs.map((b) => request(`/v2/${repo}/blobs/uploads/?digest=${b.digest}`, { method: 'POST', body: b.stream() })),
    );
    expect(pushed.map((res) => res.status)).toEqual([201, 201, 201]);
    for (const b of blobs) {
      const get = await request(`/v2/${repo}/blobs/${b.digest}`);
      expect(await digestStream(get.body!)).toEqual({ digest: b.digest, size: b.size });
    }
  });

  it('pushes a multi-part blob as two streamed PATCHes and commits it', async () => {
    const big = generated(PART + 3 * 1024 * 1024 + 7, 2);
    const first = PART + 1024 * 1024;
    let location = await startUpload();
    const one = await request(location, { method: 'PATCH', body: big.stream(0, first) });
    expect(one.status, await one.text()).toBe(202);
    expect(one.headers.get('Range')).toBe(`0-${first - 1}`);
    location = one.headers.get('Location')!;
    const two = await request(location, { method: 'PATCH', body: big.stream(first) });
    expect(two.status, await two.text()).toBe(202);
    location = two.headers.get('Location')!;
    const done = await request(`${location}?digest=${big.digest}`, { method: 'PUT' });
    expect(done.status, await done.text()).toBe(201);
    // Two chunks are re-read and verified into content storage: one more multipart write.
    expect(await s3Parts(big.digest)).toBe(2);

    const get = await request(`/v2/${repo}/blobs/${big.digest}`);
    expect(await digestStream(get.body!)).toEqual({ digest: big.digest, size: big.size });
  });

  it('refuses a multi-part blob whose digest does not match, and keeps nothing of it', async () => {
    const big = generated(PART + 5, 3);
    const claimed = generated(16, 4).digest;
    const res = await request(`/v2/${repo}/blobs/uploads/?digest=${claimed}`, { method: 'POST', body: big.stream() });
    await expectOciError(res, { status: 400, code: 'DIGEST_INVALID' });
    for (const digest of [claimed, big.digest]) {
      expect((await request(`/v2/${repo}/blobs/${digest}`, { method: 'HEAD' })).status).toBe(404);
    }
    // The multipart upload begun for it (at the claimed digest's key) was aborted, not left
    // to hold its parts.
    expect(await openMultipartUploads(claimed)).toBe(0);
  });

  it('pushes an image and an index, pulls them by tag and digest, and lists tags', async () => {
    const amd64 = image({ layers: [2048, 4096], arch: 'amd64' });
    const arm64 = image({ layers: [1024], arch: 'arm64' });
    await pushImage(amd64, 'amd64');
    await pushImage(arm64, arm64.manifest.digest);
    const list = index([
      { manifest: amd64.manifest, arch: 'amd64' },
      { manifest: arm64.manifest, arch: 'arm64' },
    ]);
    const put = await pushManifest('v1', list);
    expect(put.status, await put.text()).toBe(201);
    expect(put.headers.get('Docker-Content-Digest')).toBe(list.digest);

    for (const [reference, m] of [
      ['v1', list],
      [list.digest, list],
      ['amd64', amd64.manifest],
      [arm64.manifest.digest, arm64.manifest],
    ] as const) {
      const res = await request(`/v2/${repo}/manifests/${reference}`, { headers: { Accept: m.mediaType } });
      expect(res.status).toBe(200);
      expect(res.headers.get('Content-Type')).toBe(m.mediaType);
      expect(res.headers.get('Docker-Content-Digest')).toBe(m.digest);
      expect(await sha256(await res.arrayBuffer())).toBe(m.digest);
      const head = await request(`/v2/${repo}/manifests/${reference}`, { method: 'HEAD' });
      expect(head.status).toBe(200);
      expect(head.headers.get('Content-Length')).toBe(String(m.size));
    }

    const tags = await request(`/v2/${repo}/tags/list`);
    expect(await tags.json()).toEqual({ name: repo, tags: ['amd64', 'v1'] });
    const page = await request(`/v2/${repo}/tags/list?n=1`);
    expect(await page.json()).toEqual({ name: repo, tags: ['amd64'] });
    expect(page.headers.get('Link')).toContain('last=amd64');

    const missing = await pushManifest('broken', image({ layers: [10] }).manifest);
    await expectOciError(missing, { status: 400, code: 'MANIFEST_BLOB_UNKNOWN' });
  });

  it('lists referrers of a subject, filtered by artifactType', async () => {
    const subject = image({ layers: [512] });
    await pushImage(subject, 'subject');
    const sbom = artifact(subject.manifest, 'application/spdx+json', { kind: 'sbom' });
    const signature = artifact(subject.manifest, 'application/vnd.dev.sigstore.bundle.v0.3+json');
    for (const a of [sbom, signature]) {
      for (const b of [a.config, ...a.layers]) await pushBlob(b);
      const res = await pushManifest(a.manifest.digest, a.manifest);
      expect(res.status, await res.text()).toBe(201);
      expect(res.headers.get('OCI-Subject')).toBe(subject.manifest.digest);
    }

    const all = await request(`/v2/${repo}/referrers/${subject.manifest.digest}`);
    expect(all.status).toBe(200);
    expect(all.headers.get('Content-Type')).toBe('application/vnd.oci.image.index.v1+json');
    const body = (await all.json()) as { manifests: Array<{ digest: string; artifactType?: string; annotations?: Record<string, string> }> };
    expect(body.manifests.map((m) => m.digest).sort()).toEqual([sbom.manifest.digest, signature.manifest.digest].sort());
    expect(body.manifests.find((m) => m.digest === sbom.manifest.digest)).toMatchObject({
      ...descriptor(sbom.manifest),
      artifactType: 'application/spdx+json',
      annotations: { kind: 'sbom' },
    });

    const filtered = await request(`/v2/${repo}/referrers/${subject.manifest.digest}?artifactType=application/spdx%2Bjson`);
    expect(filtered.headers.get('OCI-Filters-Applied')).toBe('artifactType');
    expect(((await filtered.json()) as typeof body).manifests.map((m) => m.digest)).toEqual([sbom.manifest.digest]);
  });

  it('deletes a manifest, its tag with it, and a blob', async () => {
    const img = image({ layers: [256] });
    await pushImage(img, 'doomed');
    const byDigest = `/v2/${repo}/manifests/${img.manifest.digest}`;
    expect((await request(byDigest, { method: 'DELETE' })).status).toBe(202);
    const gone = await request(byDigest);
    await expectOciError(gone, { status: 404, code: 'MANIFEST_UNKNOWN' });
    expect((await request(`/v2/${repo}/manifests/doomed`)).status).toBe(404);
    const tags = (await (await request(`/v2/${repo}/tags/list`)).json()) as { tags: string[] };
    expect(tags.tags).not.toContain('doomed');

    const layer = img.layers[0]!;
    expect((await request(`/v2/${repo}/blobs/${layer.digest}`, { method: 'DELETE' })).status).toBe(202);
    const missing = await request(`/v2/${repo}/blobs/${layer.digest}`);
    await expectOciError(missing, { status: 404, code: 'BLOB_UNKNOWN' });
  });

  it('lists the repository in the catalog', async () => {
    const res = await request('/v2/_catalog');
    expect(res.status).toBe(200);
    expect(((await res.json()) as { repositories: string[] }).repositories).toContain(repo);
  });

  it('serves small blobs whose bytes were made by blob()', async () => {
    const b = blob('hello from workerd', 'text/plain');
    await pushBlob(b);
    const res = await request(`/v2/${repo}/blobs/${b.digest}`);
    expect(new TextDecoder().decode(await res.arrayBuffer())).toBe('hello from workerd');
  });
});

