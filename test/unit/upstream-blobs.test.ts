import { describe, expect, it } from 'vitest';
import { RegistryUpstream, type RegistryUpstreamOptions } from '../../src/adapters/upstream/registry-upstream.js';
import { TestClock } from '../support/clock.js';
import { FakeUpstream, expectOk, readBody, recordingSleep, type FakeUpstreamOptions } from '../support/fake-upstream.js';
import { randomBlob } from '../support/images.js';

/** Blob GET and HEAD: Range, truncation, and redirects to a CDN that must never see our credentials. */

const USER = { username: 'mirror', password: 's3cr3t-pw' };
const SIZE = 100_000;

function setup(fake: FakeUpstreamOptions = {}, client: Partial<RegistryUpstreamOptions> = {}) {
  const clock = new TestClock();
  const up = new FakeUpstream({ clock, ...fake });
  const layer = randomBlob(SIZE);
  up.addBlob('library/nginx', layer.bytes);
  const events: Record<string, unknown>[] = [];
  const upstream = new RegistryUpstream({ url: up.url, fetch: up.fetch, clock, sleep: recordingSleep().sleep, log: (e) => events.push(e), ...client });
  const get = (offset?: number, length?: number) => upstream.blob('library/nginx', layer.digest, offset, length);
  return { up, upstream, layer, get, events };
}

describe('blob GET', () => {
  it('streams the whole blob, without a Range header', async () => {
    const { up, layer, get } = setup();
    const r = expectOk(await get());
    expect({ offset: r.offset, length: r.length, size: r.size }).toEqual({ offset: 0, length: SIZE, size: SIZE });
    expect((await readBody(r.body)).bytes.equals(layer.bytes)).toBe(true);
    expect(up.requests[0]!.path).toBe(`/v2/library/nginx/blobs/${layer.digest}`);
    expect(up.requests[0]!.headers.range).toBeUndefined();
  });

  it.each([
    // [offset, length, Range sent, offset, length, size]
    [1_000, undefined, 'bytes=1000-', 1_000, SIZE - 1_000, SIZE],
    [1_000, 500, 'bytes=1000-1499', 1_000, 500, SIZE],
    [0, 10, 'bytes=0-9', 0, 10, SIZE],
    [SIZE - 1, undefined, `bytes=${SIZE - 1}-`, SIZE - 1, 1, SIZE],
    [0, undefined, undefined, 0, SIZE, SIZE],
  ])('offset %s length %s: sends %s, reports offset %s length %s size %s', async (offset, length, range, at, len, size) => {
    const { up, layer, get } = setup();
    const r = expectOk(await get(offset, length));
    expect(up.requests[0]!.headers.range).toBe(range);
    expect({ offset: r.offset, length: r.length, size: r.size }).toEqual({ offset: at, length: len, size });
    expect((await readBody(r.body)).bytes.equals(layer.bytes.subarray(at, at + len))).toBe(true);
  });

  it('reports offset 0 and the whole size when the upstream ignores Range and answers 200', async () => {
    const { up, layer, get } = setup();
    up.fault({ kind: 'ignore-range' });
    const r = expectOk(await get(1_000, 500));
    expect({ offset: r.offset, length: r.length, size: r.size }).toEqual({ offset: 0, length: SIZE, size: SIZE });
    expect((await readBody(r.body)).bytes.equals(layer.bytes)).toBe(true);
  });

  it('reads a 206 with an unknown total (bytes a-b/*)', async () => {
    const { up, get } = setup();
    up.fault({ kind: 'status', status: 206, headers: { 'content-range': 'bytes 10-19/*' }, body: '0123456789' });
    const r = expectOk(await get(10, 10));
    expect({ offset: r.offset, length: r.length, size: r.size }).toEqual({ offset: 10, length: 10, size: undefined });
    expect((await readBody(r.body)).bytes.toString()).toBe('0123456789');
  });

  it.each([
    ['no Content-Range', {}],
    ['an unreadable Content-Range', { 'content-range': 'bytes=10-19' }],
    ['a Content-Length that disagrees', { 'content-range': 'bytes 10-19/100', 'content-length': '5' }],
  ])('answers unavailable to a 206 with %s', async (_, headers) => {
    const { up, get } = setup();
    up.fault({ kind: 'status', status: 206, headers, body: '01234' });
    expect(await get(10, 10)).toMatchObject({ kind: 'unavailable', status: 206 });
  });

  it('refuses offsets and lengths that are not byte counts', async () => {
    const { get } = setup();
    await expect(get(-1)).rejects.toThrow(RangeError);
    await expect(get(1.5)).rejects.toThrow(RangeError);
    await expect(get(0, 0)).rejects.toThrow(RangeError);
  });

  it.each([
    ['a truncated body (Content-Length larger than what is sent)', { kind: 'truncate', afterBytes: 60_000 }],
    ['a mid-stream disconnect', { kind: 'disconnect', afterBytes: 60_000 }],
  ] as const)('errors the stream on %s, never ends it cleanly', async (_, fault) => {
    const { up, get } = setup();
    up.fault(fault);
    const r = expectOk(await get());
    const read = await readBody(r.body);
    expect(read.error).toBeInstanceOf(Error);
    expect(read.bytes.byteLength).toBeLessThanOrEqual(60_000);
  });

  it('errors a truncated range too', async () => {
    const { up, get } = setup();
    up.fault({ kind: 'truncate', afterBytes: 100 });
    const r = expectOk(await get(1_000, 500));
    expect(String((await readBody(r.body)).error)).toContain('body ended after 100 of 500 bytes');
  });

  it('errors a body that runs past its Content-Length', async () => {
    const { up, get } = setup();
    up.fault({ kind: 'status', status: 200, headers: { 'content-length': '5' }, body: '0123456789' });
    expect(String((await readBody(expectOk(await get()).body)).error)).toContain('runs past its Content-Length');
  });

  it('passes wrong bytes through as served: the digest is core’s to check', async () => {
    const { up, layer, get } = setup();
    up.fault({ kind: 'wrong-bytes' });
    const { bytes, error } = await readBody(expectOk(await get()).body);
    expect(error).toBeUndefined();
    expect(bytes.byteLength).toBe(SIZE);
    expect(bytes.equals(layer.bytes)).toBe(false);
  });

  it('never sizes a buffer from a declared Content-Length', async () => {
    const { up, get } = setup();
    // 1 TiB declared: answered at once with a stream, which errors when the bytes run out.
    up.fault({ kind: 'status', status: 200, headers: { 'content-length': String(2 ** 40) }, body: 'tiny' });
    const r = expectOk(await get());
    expect(r.length).toBe(2 ** 40);
    const read = await readBody(r.body);
    expect(read.bytes.toString()).toBe('tiny');
    expect(String(read.error)).toContain(`body ended after 4 of ${2 ** 40} bytes`);
  });

  it.each([
    ['404', 'not-found', { kind: 'status', status: 404 }],
    ['400 BLOB_UNKNOWN', 'not-found', { kind: 'status', status: 400, body: '{"errors":[{"code":"BLOB_UNKNOWN"}]}' }],
    ['403 DENIED', 'denied', { kind: 'status', status: 403, body: '{"errors":[{"code":"DENIED"}]}' }],
    ['416', 'unavailable', { kind: 'status', status: 416 }],
  ] as const)('maps %s to %s', async (_, kind, fault) => {
    const { up, get } = setup();
    up.fault(fault);
    expect((await get()).kind).toBe(kind);
  });

  it('answers not-found for a blob the upstream does not have', async () => {
    const { upstream } = setup();
    expect(await upstream.blob('library/nginx', `sha256:${'0'.repeat(64)}`)).toEqual({ kind: 'not-found' });
    expect(await upstream.blob('library/absent', `sha256:${'0'.repeat(64)}`)).toEqual({ kind: 'not-found' });
  });
});

describe('redirects', () => {
  it('follows a blob redirect to a CDN without the credentials', async () => {
    const { up, layer, get, events } = setup({ blobHost: 'cdn.test', auth: { scheme: 'bearer', users: [USER], anonymous: false } }, { credentials: USER });
    const r = expectOk(await get(1_000));
    expect(r.offset).toBe(1_000);
    expect((await readBody(r.body)).bytes.equals(layer.bytes.subarray(1_000))).toBe(true);
    const cdn = up.requestsTo('cdn.test');
    expect(cdn).toHaveLength(1);
    expect(cdn[0]!.headers.authorization).toBeUndefined();
    expect(cdn[0]!.headers.range).toBe('bytes=1000-');
    expect(up.requestsTo().at(-1)!.headers.authorization).toMatch(/^Bearer /);
    expect(events).toContainEqual({ event: 'upstream.redirect', from: 'registry.test', to: 'cdn.test', status: 307, credentialsDropped: true });
    // The signed URL's query never reaches the log.
    expect(JSON.stringify(events)).not.toContain('Signature');
  });

  it('applies truncation and disconnects at the CDN as well', async () => {
    const { up, get } = setup({ blobHost: 'cdn.test' });
    up.fault({ kind: 'truncate', afterBytes: 10, match: { host: 'cdn.test' } });
    expect((await readBody(expectOk(await get()).body)).error).toBeDefined();
  });

  it('keeps Authorization on a same-origin redirect, and never adds it back after leaving', async () => {
    // The registry itself does not check (no `auth`): the first fault only makes the client send Basic.
    const { up, get, layer } = setup({}, { credentials: USER });
    const path = `/v2/library/nginx/blobs/${layer.digest}`;
    // registry -> registry (other path) -> elsewhere -> registry
    up.fault({ kind: 'status', status: 401, headers: { 'www-authenticate': 'Basic realm="r"' }, match: { path } });
    up.fault({ kind: 'status', status: 302, headers: { location: '/v2/moved/blob' }, match: { path } });
    up.fault({ kind: 'status', status: 307, headers: { location: 'https://elsewhere.test/hop' }, match: { path: '/v2/moved/blob' } });
    up.fault({ kind: 'status', status: 308, headers: { location: `https://registry.test${path}` }, match: { host: 'elsewhere.test' } });
    const r = expectOk(await get());
    expect((await readBody(r.body)).bytes.equals(layer.bytes)).toBe(true);
    expect(up.requests.map((q) => `${q.host}${q.path} ${q.headers.authorization ? 'auth' : '-'}`)).toEqual([
      `registry.test${path} -`,
      `registry.test${path} auth`,
      'registry.test/v2/moved/blob auth',
      'elsewhere.test/hop -',
      `registry.test${path} -`,
    ]);
  });

  it('stops after 5 redirects', async () => {
    const { up, get } = setup();
    up.fault({ kind: 'status', status: 302, headers: { location: 'https://registry.test/loop' }, times: Infinity, match: {} });
    expect(await get()).toEqual({ kind: 'unavailable', message: 'registry.test: more than 5 redirects' });
    expect(up.requests).toHaveLength(6);
  });

  it.each([['file:///etc/passwd'], ['ftp://cdn.test/blob']])('refuses a redirect to %s', async (location) => {
    const { up, get } = setup();
    up.fault({ kind: 'status', status: 307, headers: { location } });
    expect(await get()).toEqual({ kind: 'unavailable', message: 'registry.test: redirect to a non-http(s) URL' });
    expect(up.requests).toHaveLength(1);
  });

  it('answers denied to a 401 from the CDN without offering it credentials', async () => {
    const { up, get } = setup({ blobHost: 'cdn.test', auth: { scheme: 'bearer' } }, { credentials: USER });
    up.fault({ kind: 'status', status: 401, headers: { 'www-authenticate': 'Bearer realm="https://cdn.test/steal"' }, match: { host: 'cdn.test' } });
    expect(await get()).toMatchObject({ kind: 'denied', status: 401 });
    expect(up.requestsTo('auth.registry.test')).toHaveLength(1);
    expect(up.requests.filter((q) => q.path === '/steal')).toHaveLength(0);
  });
});

describe('blob HEAD', () => {
  it('answers the size', async () => {
    const { upstream, layer, up } = setup();
    expect(await upstream.blobHead('library/nginx', layer.digest)).toEqual({ kind: 'ok', size: SIZE });
    expect(up.requests[0]!.method).toBe('HEAD');
  });

  it('answers not-found for an absent blob', async () => {
    const { upstream } = setup();
    expect(await upstream.blobHead('library/nginx', `sha256:${'1'.repeat(64)}`)).toEqual({ kind: 'not-found' });
  });

  it('follows the redirect to the CDN for the size', async () => {
    const { upstream, layer, up } = setup({ blobHost: 'cdn.test' });
    expect(await upstream.blobHead('library/nginx', layer.digest)).toEqual({ kind: 'ok', size: SIZE });
    expect(up.requestsTo('cdn.test')[0]!.method).toBe('HEAD');
  });

  it('takes the redirect as proof when the storage refuses a HEAD (a URL signed for GET)', async () => {
    const { upstream, layer, up } = setup({ blobHost: 'cdn.test' });
    up.fault({ kind: 'status', status: 403, match: { host: 'cdn.test' } });
    expect(await upstream.blobHead('library/nginx', layer.digest)).toEqual({ kind: 'ok' });
  });
});
