import { createHash } from 'node:crypto';
import { expect } from 'vitest';
import type { Blob } from './images.js';
import { expectOciError, guardedApp } from './oci-errors.js';

/**
 * Requests and assertions shared by the upload tests in test/http/uploads-*.test.ts: open a
 * session, PATCH bytes into it, complete it with PUT ?digest=, and check what is then visible.
 */

/** Anything that answers requests like app.request(): testApp(), guardedApp(), or an app over other adapters. */
export type App = Pick<ReturnType<typeof guardedApp>, 'request'>;

/** Appends a query parameter to a Location that may already carry a query. */
export function withQuery(location: string, key: string, value: string): string {
  return `${location}${location.includes('?') ? '&' : '?'}${key}=${encodeURIComponent(value)}`;
}

/** POST /v2/<name>/blobs/uploads/: asserts 202 and returns the session's Location. */
export async function startUpload(t: App, name = 'repo'): Promise<string> {
  const res = await t.request(`/v2/${name}/blobs/uploads/`, { method: 'POST', headers: { 'Content-Length': '0' } });
  expect(res.status).toBe(202);
  const location = res.headers.get('location')!;
  expect(location.startsWith(`/v2/${name}/blobs/uploads/`)).toBe(true);
  return location;
}

/** PATCH bytes into a session, with a Content-Range when one is given (chunked) and without it (streamed). */
export function patch(t: App, location: string, bytes: Uint8Array, range?: string, headers: Record<string, string> = {}) {
  return t.request(location, {
    method: 'PATCH',
    body: new Uint8Array(bytes),
    headers: { 'Content-Type': 'application/octet-stream', ...(range ? { 'Content-Range': range } : {}), ...headers },
  });
}

/** PUT <location>?digest=, with an optional final chunk: completes the upload. */
export function finish(t: App, location: string, digest: string, bytes?: Uint8Array, headers: Record<string, string> = {}) {
  return t.request(withQuery(location, 'digest', digest), {
    method: 'PUT',
    body: bytes && new Uint8Array(bytes),
    headers: { 'Content-Type': 'application/octet-stream', ...headers },
  });
}

/** A completion answered 201 with Location and Docker-Content-Digest, and the blob now serves its bytes. */
export async function expectCreated(t: App, res: Response, name: string, b: Blob) {
  expect(res.status, await res.clone().text()).toBe(201);
  expect(res.headers.get('location')).toBe(`/v2/${name}/blobs/${b.digest}`);
  expect(res.headers.get('docker-content-digest')).toBe(b.digest);
  const got = await t.request(`/v2/${name}/blobs/${b.digest}`);
  expect(got.status).toBe(200);
  expect(Buffer.from(await got.arrayBuffer()).equals(b.bytes)).toBe(true);
}

/** GET of the blob in `name` is 404 BLOB_UNKNOWN. */
export async function expectNotVisible(t: App, name: string, digest: string) {
  await expectOciError(await t.request(`/v2/${name}/blobs/${digest}`), { status: 404, code: 'BLOB_UNKNOWN' });
}

/** GET of the session is 404 BLOB_UPLOAD_UNKNOWN. */
export async function expectUploadGone(t: App, location: string) {
  await expectOciError(await t.request(location), { status: 404, code: 'BLOB_UPLOAD_UNKNOWN' });
}

/** The sha512 digest of `bytes` (the images helpers make only sha256). */
export function sha512(bytes: Uint8Array): string {
  return `sha512:${createHash('sha512').update(bytes).digest('hex')}`;
}

/** The upload id at the end of a session Location. */
export function uploadIdOf(location: string): string {
  return new URL(location, 'http://x').pathname.split('/').pop()!;
}

/** Keys of the store objects that hold the upload's chunks (uploads/<id>/...). */
export function partObjects(t: { store: { objects: Map<string, unknown> } }, location: string): string[] {
  const prefix = `uploads/${uploadIdOf(location)}/`;
  return [...t.store.objects.keys()].filter((key) => key.startsWith(prefix)).sort();
}

/** A request body that is a stream with no bytes: what a Node server hands over for an empty PUT or PATCH. */
export function emptyStreamBody(): RequestInit {
  return { body: new ReadableStream<Uint8Array>({ start: (c) => c.close() }), duplex: 'half' } as RequestInit;
}

/** PATCHes `count` one-byte chunks into the session, each asserted 202. */
export async function patchBytes(t: App, location: string, count: number, byte = 7): Promise<void> {
  const chunk = new Uint8Array([byte]);
  for (let i = 0; i < count; i++) {
    const res = await patch(t, location, chunk);
    if (res.status !== 202) throw new Error(`chunk ${i}: ${res.status} ${await res.text()}`);
  }
}

/**
 * Replaces `target[method]` with `wrapper`, which receives the original (bound) and the call's
 * arguments; returns a function that puts the original back. For injecting faults, lost replies,
 * crashes (a promise that never settles) and interleavings into a port.
 */
export function intercept<T extends object, K extends keyof T>(
  target: T,
  method: K,
  wrapper: (original: T[K], ...args: unknown[]) => unknown,
): () => void {
  const original = target[method];
  const bound = (original as (...a: unknown[]) => unknown).bind(target) as T[K];
  (target as Record<K, unknown>)[method] = (...args: unknown[]) => wrapper(bound, ...args);
  return () => {
    (target as Record<K, unknown>)[method] = original;
  };
}

/** A promise that never settles: the rest of a request that "crashed" at this call. */
export const never = <T>(): Promise<T> => new Promise<T>(() => undefined);

/** A gate that holds callers until opened. */
export function gate(): { wait: () => Promise<void>; open: () => void; readonly arrived: number } {
  let open!: () => void;
  const opened = new Promise<void>((r) => (open = r));
  let arrived = 0;
  return {
    wait: () => {
      arrived++;
      return opened;
    },
    open,
    get arrived() {
      return arrived;
    },
  };
}

/** Resolves once `check` is true, polling the event loop (for "the other request got this far"). */
export async function until(check: () => boolean, what = 'condition'): Promise<void> {
  for (let i = 0; i < 2000; i++) {
    if (check()) return;
    await new Promise((r) => setTimeout(r, 1));
  }
  throw new Error(`timed out waiting for ${what}`);
}
