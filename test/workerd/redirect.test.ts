import { env } from 'cloudflare:workers';
import { expect, it } from 'vitest';
import worker from '../../src/entry/workers.js';
import { randomBlob } from '../support/images.js';

/**
 * Blob downloads redirected to presigned S3 URLs (OUTPOST_REDIRECT_SECONDS), inside workerd:
 * the URL is signed with workerd's crypto and fetched from workerd. The Worker module is
 * imported and called with the project's bindings plus the setting; each test file gets a
 * module instance of its own, so the isolate-wide app built here has redirects on.
 */
const repo = `workerd/${crypto.randomUUID().slice(0, 8)}/redirect`;
const redirectEnv = { ...env, OUTPOST_REDIRECT_SECONDS: '300' };

function request(path: string, init?: RequestInit): Promise<Response> {
  return worker.fetch(new Request(`http://outpost.test${path}`, init), redirectEnv, {});
}

it('redirects a blob GET to a presigned URL that serves the bytes, Range included', async () => {
  const b = randomBlob(70_000);
  const push = await request(`/v2/${repo}/blobs/uploads/?digest=${b.digest}`, { method: 'POST', body: new Uint8Array(b.bytes) });
  expect(push.status, await push.text()).toBe(201);

  const res = await request(`/v2/${repo}/blobs/${b.digest}`);
  expect(res.status).toBe(307);
  const location = res.headers.get('Location')!;
  expect(location.startsWith(`${String(env.OUTPOST_S3_ENDPOINT)}/`)).toBe(true);
  expect(new URL(location).searchParams.get('X-Amz-Expires')).toBe('300');

  const whole = await fetch(location);
  expect(whole.status).toBe(200);
  expect(new Uint8Array(await whole.arrayBuffer())).toEqual(new Uint8Array(b.bytes));
  const part = await fetch(location, { headers: { Range: 'bytes=65530-65549' } });
  expect(part.status).toBe(206);
  expect(new Uint8Array(await part.arrayBuffer())).toEqual(new Uint8Array(b.bytes.subarray(65_530, 65_550)));

  // A wrong signature is refused by the store: the URL is what grants access.
  const forged = new URL(location);
  forged.searchParams.set('X-Amz-Signature', '0'.repeat(64));
  expect((await fetch(forged)).status).toBe(403);
});
