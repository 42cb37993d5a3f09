import { expect } from 'vitest';
import { blob, type Blob, type Image } from './images.js';
import { MediaType } from '../../src/core/oci/media-types.js';
import { expectOciError, guardedApp } from './oci-errors.js';

/**
 * Requests and assertions shared by the manifest tests in test/http/manifests-*.test.ts:
 * PUT a manifest, push the blobs it names, and check what GET and HEAD then answer.
 */

export type App = ReturnType<typeof guardedApp>;

/** A manifest document as the bytes a client would PUT (compact JSON). */
export function manifest(doc: unknown, mediaType: string = MediaType.OciManifest): Blob {
  return blob(JSON.stringify(doc), mediaType);
}

/** PUT /v2/<name>/manifests/<reference>, with a Content-Type only when one is named. */
export function put(t: App, name: string, reference: string, body: Uint8Array | string, contentType?: string, headers: Record<string, string> = {}) {
  return t.request(`/v2/${name}/manifests/${reference}`, {
    method: 'PUT',
    // A Buffer, so that no Content-Type is sent unless the test names one (a string body would be text/plain).
    body: new Uint8Array(typeof body === 'string' ? Buffer.from(body) : body),
    headers: { ...(contentType ? { 'Content-Type': contentType } : {}), ...headers },
  });
}

/** Pushes an image's config and layers, but not its manifest. */
export async function pushBlobs(t: App, name: string, img: Image) {
  for (const b of [img.config, ...img.layers]) await t.pushBlob(name, b);
}

/** HEAD and GET of `reference` are 200 with `m`'s media type, size and digest; GET serves its bytes verbatim. */
export async function expectPulled(t: App, name: string, reference: string, m: Blob, mediaType = m.mediaType) {
  for (const method of ['HEAD', 'GET']) {
    const res = await t.request(`/v2/${name}/manifests/${reference}`, { method, headers: { Accept: mediaType } });
    expect(res.status, `${method} ${reference}`).toBe(200);
    expect(res.headers.get('content-type')).toBe(mediaType);
    expect(res.headers.get('content-length')).toBe(String(m.size));
    expect(res.headers.get('docker-content-digest')).toBe(m.digest);
    const bytes = Buffer.from(await res.arrayBuffer());
    if (method === 'GET') expect(bytes.equals(m.bytes), 'bytes are served verbatim').toBe(true);
    else expect(bytes.byteLength).toBe(0);
  }
}

/** A manifest PUT answered 201 with Location, Docker-Content-Digest and (only for a subject) OCI-Subject. */
export async function expectCreated(res: Response, name: string, m: Blob, subject?: string) {
  expect(res.status, await res.clone().text()).toBe(201);
  expect(res.headers.get('location')).toBe(`/v2/${name}/manifests/${m.digest}`);
  expect(res.headers.get('docker-content-digest')).toBe(m.digest);
  expect(res.headers.get('oci-subject')).toBe(subject ?? null);
}

/** GET and HEAD of `reference` are 404 MANIFEST_UNKNOWN. */
export async function expectUnknown(t: App, name: string, reference: string) {
  await expectOciError(await t.request(`/v2/${name}/manifests/${reference}`), { status: 404, code: 'MANIFEST_UNKNOWN' });
  await expectOciError(await t.request(`/v2/${name}/manifests/${reference}`, { method: 'HEAD' }), {
    status: 404,
    code: 'MANIFEST_UNKNOWN',
    head: true,
  });
}

