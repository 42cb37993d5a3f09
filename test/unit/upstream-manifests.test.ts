import { describe, expect, it } from 'vitest';
import { MAX_MANIFEST_BYTES as CORE_MAX_MANIFEST_BYTES } from '../../src/core/oci/manifest.js';
import { MAX_MANIFEST_BYTES } from '../../src/adapters/upstream/limits.js';
import { RegistryUpstream, repositoryPath, segment, type RegistryUpstreamOptions } from '../../src/adapters/upstream/registry-upstream.js';
import { TestClock } from '../support/clock.js';
import { FakeUpstream, expectOk, recordingSleep, type FakeUpstreamOptions } from '../support/fake-upstream.js';
import { artifact, image, index } from '../support/images.js';

/** Manifests (GET, HEAD, caps), tag lists, referrers, rate-limit headers and path escaping. */

const OCI = 'application/vnd.oci.image.manifest.v1+json';
const ACCEPT = [OCI, 'application/vnd.oci.image.index.v1+json', 'application/vnd.docker.distribution.manifest.v2+json'];

function setup(fake: FakeUpstreamOptions = {}, client: Partial<RegistryUpstreamOptions> = {}) {
  const clock = new TestClock();
  const up = new FakeUpstream({ clock, ...fake });
  const img = image();
  up.addImage('library/nginx', 'latest', img);
  const upstream = new RegistryUpstream({ url: up.url, fetch: up.fetch, clock, sleep: recordingSleep().sleep, ...client });
  return { up, upstream, img, clock };
}

describe('manifests', () => {
  it('GET sends the Accept list and returns the bytes exactly as served', async () => {
    const { up, upstream, img } = setup();
    const m = expectOk(await upstream.manifest('library/nginx', 'latest', 'GET', ACCEPT));
    expect(Buffer.from(m.bytes!).equals(img.manifest.bytes)).toBe(true);
    expect(m).toMatchObject({ mediaType: OCI, digest: img.manifest.digest, size: img.manifest.size });
    expect(up.requests[0]!.headers.accept).toBe(ACCEPT.join(', '));
  });

  it('HEAD answers media type, digest and size without bytes', async () => {
    const { up, upstream, img } = setup();
    const m = expectOk(await upstream.manifest('library/nginx', 'latest', 'HEAD', ACCEPT));
    expect(m).toEqual({ kind: 'ok', mediaType: OCI, digest: img.manifest.digest, size: img.manifest.size });
    expect(up.requests[0]!.method).toBe('HEAD');
  });

  it('fetches by digest with the colon unescaped', async () => {
    const { up, upstream, img } = setup();
    expectOk(await upstream.manifest('library/nginx', img.manifest.digest, 'GET', ACCEPT));
    expect(up.requests[0]!.path).toBe(`/v2/library/nginx/manifests/${img.manifest.digest}`);
  });

  it('serves an index and a Docker manifest list with their own media types', async () => {
    const { up, upstream, img } = setup();
    const list = index([{ manifest: img.manifest, arch: 'amd64' }], true);
    up.addManifest('library/nginx', 'multi', list.bytes, list.mediaType);
    expect(expectOk(await upstream.manifest('library/nginx', 'multi', 'GET', ACCEPT)).mediaType).toBe(list.mediaType);
  });

  it('omits the digest when the upstream sends none', async () => {
    const { up, upstream } = setup();
    up.fault({ kind: 'status', status: 200, headers: { 'content-type': OCI }, body: '{"schemaVersion":2}' });
    const m = expectOk(await upstream.manifest('library/nginx', 'latest', 'GET', ACCEPT));
    expect(m).toEqual({ kind: 'ok', mediaType: OCI, bytes: new TextEncoder().encode('{"schemaVersion":2}'), size: 19 });
  });

  it.each([
    ['an unknown tag', 'library/nginx', 'nope', 'GET'],
    ['an unknown repository', 'library/absent', 'latest', 'GET'],
    ['an unknown tag (HEAD)', 'library/nginx', 'nope', 'HEAD'],
  ] as const)('answers not-found for %s', async (_, repo, ref, method) => {
    const { upstream } = setup();
    expect(await upstream.manifest(repo, ref, method, ACCEPT)).toEqual({ kind: 'not-found' });
  });

  it.each([
    // [status, body, answer]
    [400, '{"errors":[{"code":"MANIFEST_UNKNOWN","message":"x"}]}', { kind: 'not-found' }],
    [403, '{"errors":[{"code":"NAME_UNKNOWN"}]}', { kind: 'not-found' }],
    [403, '{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}', { kind: 'denied', status: 403, message: 'registry.test denied the manifest request (403 DENIED)' }],
    [401, '', { kind: 'denied', status: 401 }],
    [400, '{"errors":[{"code":"MANIFEST_INVALID"}]}', { kind: 'unavailable', status: 400, message: 'registry.test answered 400 MANIFEST_INVALID to the manifest request' }],
    [406, 'not json', { kind: 'unavailable', status: 406, message: 'registry.test answered 406 to the manifest request' }],
    [400, '{"errors":[{"code":"<script>alert(1)</script>"}]}', { kind: 'unavailable', status: 400, message: 'registry.test answered 400 to the manifest request' }],
    [204, '', { kind: 'unavailable', status: 204 }],
  ])('maps a %s with %s', async (status, body, answer) => {
    const { up, upstream } = setup();
    up.fault({ kind: 'status', status, body: status === 204 ? undefined : body, times: 2 });
    expect(await upstream.manifest('library/nginx', 'latest', 'GET', ACCEPT)).toMatchObject(answer);
  });

  it('keeps core’s manifest cap', () => {
    expect(MAX_MANIFEST_BYTES).toBe(CORE_MAX_MANIFEST_BYTES);
  });

  it('refuses a manifest over 4 MiB that declares its length, without reading it', async () => {
    const { up, upstream } = setup();
    let pulled = 0;
    const body = new ReadableStream<Uint8Array>({ pull: (c) => void (pulled++, c.enqueue(new Uint8Array(1024))) }, { highWaterMark: 0 });
    up.fault({ kind: 'respond', respond: () => new Response(body, { headers: { 'content-type': OCI, 'content-length': String(MAX_MANIFEST_BYTES + 1) } }) });
    expect(await upstream.manifest('library/nginx', 'latest', 'GET', ACCEPT)).toMatchObject({ kind: 'unavailable', message: `registry.test served a manifest larger than ${MAX_MANIFEST_BYTES} bytes` });
    expect(pulled).toBe(0);
  });

  it('stops reading an undeclared manifest as soon as it passes 4 MiB', async () => {
    const { up, upstream } = setup();
    let sent = 0;
    const body = new ReadableStream<Uint8Array>(
      {
        pull: (c) => {
          sent += 65_536;
          c.enqueue(new Uint8Array(65_536));
        },
      },
      { highWaterMark: 0 },
    );
    up.fault({ kind: 'respond', respond: () => new Response(body, { headers: { 'content-type': OCI } }) });
    expect((await upstream.manifest('library/nginx', 'latest', 'GET', ACCEPT)).kind).toBe('unavailable');
    expect(sent).toBeLessThanOrEqual(MAX_MANIFEST_BYTES + 65_536);
  });

  it('answers unavailable to a truncated manifest', async () => {
    const { up, upstream } = setup();
    up.fault({ kind: 'truncate', afterBytes: 10 });
    expect(await upstream.manifest('library/nginx', 'latest', 'GET', ACCEPT)).toMatchObject({ kind: 'unavailable' });
  });

  it('answers unavailable to a HEAD without Content-Length', async () => {
    const { up, upstream } = setup();
    up.fault({ kind: 'status', status: 200, headers: { 'content-type': OCI } });
    expect(await upstream.manifest('library/nginx', 'latest', 'HEAD', ACCEPT)).toMatchObject({ kind: 'unavailable' });
  });
});

describe('rate-limit headers', () => {
  it('records the last ratelimit-limit and ratelimit-remaining seen', async () => {
    const { upstream, clock } = setup({ rateLimit: { limit: 100, remaining: 77 } });
    expect(upstream.rateLimit()).toBeUndefined();
    await upstream.manifest('library/nginx', 'latest', 'GET', ACCEPT);
    expect(upstream.rateLimit()).toEqual({ limit: 100, remaining: 76, at: clock.now() });
    clock.advance(1_000);
    await upstream.manifest('library/nginx', 'latest', 'GET', ACCEPT);
    expect(upstream.rateLimit()).toEqual({ limit: 100, remaining: 75, at: clock.now() });
  });

  it('answers rate-limited when the pull limit is spent', async () => {
    const { upstream } = setup({ rateLimit: { limit: 100, remaining: 0 } });
    expect(await upstream.manifest('library/nginx', 'latest', 'GET', ACCEPT)).toEqual({ kind: 'rate-limited', retryAfterSeconds: 60 });
    expect(upstream.rateLimit()).toMatchObject({ limit: 100, remaining: 0 });
  });

  it('keeps the last reading through answers without the headers', async () => {
    const { up, upstream } = setup({ rateLimit: { limit: 100, remaining: 10 } });
    await upstream.manifest('library/nginx', 'latest', 'GET', ACCEPT);
    up.fault({ kind: 'status', status: 404 });
    await upstream.manifest('library/nginx', 'latest', 'GET', ACCEPT);
    expect(upstream.rateLimit()).toMatchObject({ remaining: 9 });
  });
});

describe('tags', () => {
  function tagged(n: number) {
    const s = setup();
    for (let i = 0; i < n; i++) s.up.addManifest('library/nginx', `v${String(i).padStart(2, '0')}`, s.img.manifest.bytes, OCI);
    return s;
  }

  it('lists one page with n and last, and passes the Link header’s last on as next', async () => {
    const { up, upstream } = tagged(5);
    const first = expectOk(await upstream.tags('library/nginx', 2));
    expect(first).toEqual({ kind: 'ok', tags: ['latest', 'v00'], next: 'v00' });
    const second = expectOk(await upstream.tags('library/nginx', 2, first.next));
    expect(second).toEqual({ kind: 'ok', tags: ['v01', 'v02'], next: 'v02' });
    const url = new URL(up.requests[1]!.url);
    expect([url.pathname, url.searchParams.get('n'), url.searchParams.get('last')]).toEqual(['/v2/library/nginx/tags/list', '2', 'v00']);
    expect(expectOk(await upstream.tags('library/nginx', 10, 'v02'))).toEqual({ kind: 'ok', tags: ['v03', 'v04'] });
  });

  it('lists everything without n', async () => {
    const { up, upstream } = tagged(3);
    expect(expectOk(await upstream.tags('library/nginx')).tags).toEqual(['latest', 'v00', 'v01', 'v02']);
    expect(new URL(up.requests[0]!.url).search).toBe('');
  });

  it.each([
    ['{"name":"x","tags":null}', { kind: 'ok', tags: [] }],
    ['{"name":"x"}', { kind: 'ok', tags: [] }],
    ['{"name":"x","tags":["a",1]}', { kind: 'unavailable' }],
    ['{"name":"x","tags":"a"}', { kind: 'unavailable' }],
    ['[]', { kind: 'unavailable' }],
    ['not json', { kind: 'unavailable' }],
  ])('reads %s as %o', async (body, answer) => {
    const { up, upstream } = setup();
    up.fault({ kind: 'status', status: 200, body });
    expect(await upstream.tags('library/nginx')).toMatchObject(answer);
  });

  it.each([
    ['</v2/x/tags/list?n=2&last=b>; rel="next"', 'b'],
    ['<https://registry.test/v2/x/tags/list?last=z%2Fy&n=2>; rel=next', 'z/y'],
    ['</v2/x/tags/list?n=2&last=a>; rel="prev", </v2/x/tags/list?n=2&last=c>; rel="next"', 'c'],
    ['</v2/x/tags/list?n=2>; rel="next"', undefined],
    ['garbage', undefined],
  ])('reads Link %s as next %s', async (link, next) => {
    const { up, upstream } = setup();
    up.fault({ kind: 'status', status: 200, headers: { link }, body: '{"name":"x","tags":["a"]}' });
    expect(expectOk(await upstream.tags('library/nginx')).next).toBe(next);
  });

  it('refuses a tag list over its cap', async () => {
    const { up, upstream } = setup();
    up.fault({ kind: 'status', status: 200, headers: { 'content-length': String(5 * 1024 * 1024) }, body: '{}' });
    expect(await upstream.tags('library/nginx')).toMatchObject({ kind: 'unavailable', message: 'registry.test served a tag list larger than 4194304 bytes' });
  });
});

describe('referrers', () => {
  function withReferrers(fake: FakeUpstreamOptions = {}) {
    const s = setup(fake);
    const sig = artifact(s.img.manifest, 'application/vnd.dev.cosign.artifact.sig.v1+json');
    const sbom = artifact(s.img.manifest, 'application/spdx+json');
    s.up.addManifest('library/nginx', undefined, sig.manifest.bytes, OCI);
    s.up.addManifest('library/nginx', undefined, sbom.manifest.bytes, OCI);
    return { ...s, sig, sbom };
  }

  it('returns the referrers index bytes, unfiltered', async () => {
    const { up, upstream, img, sig, sbom } = withReferrers();
    const r = expectOk(await upstream.referrers('library/nginx', img.manifest.digest));
    expect(r.filtered).toBe(false);
    const doc = JSON.parse(new TextDecoder().decode(r.bytes));
    expect(doc.manifests.map((m: { digest: string }) => m.digest).sort()).toEqual([sig.manifest.digest, sbom.manifest.digest].sort());
    expect(up.requests[0]!.path).toBe(`/v2/library/nginx/referrers/${img.manifest.digest}`);
    expect(up.requests[0]!.headers.accept).toBe('application/vnd.oci.image.index.v1+json');
  });

  it('passes artifactType on and reports OCI-Filters-Applied', async () => {
    const { up, upstream, img, sbom } = withReferrers();
    const r = expectOk(await upstream.referrers('library/nginx', img.manifest.digest, 'application/spdx+json'));
    expect(r.filtered).toBe(true);
    expect(JSON.parse(new TextDecoder().decode(r.bytes)).manifests.map((m: { digest: string }) => m.digest)).toEqual([sbom.manifest.digest]);
    expect(new URL(up.requests[0]!.url).searchParams.get('artifactType')).toBe('application/spdx+json');
  });

  it('reports filtered false when the upstream ignores the filter', async () => {
    const { up, upstream, img } = withReferrers();
    up.fault({ kind: 'status', status: 200, body: '{"schemaVersion":2,"manifests":[]}' });
    expect(expectOk(await upstream.referrers('library/nginx', img.manifest.digest, 'application/spdx+json')).filtered).toBe(false);
  });

  it('answers not-found when the upstream has no referrers API', async () => {
    const { upstream, img } = withReferrers({ referrersApi: false });
    expect(await upstream.referrers('library/nginx', img.manifest.digest)).toEqual({ kind: 'not-found' });
  });
});

describe('path escaping', () => {
  it.each([
    ['library/nginx', '/v2/library/nginx/manifests/latest'],
    ['a b/c?d', '/v2/a%20b/c%3Fd/manifests/latest'],
    ['x#y/%2e%2e', '/v2/x%23y/%252e%252e/manifests/latest'],
  ])('escapes repository %j', async (repo, path) => {
    const { up, upstream } = setup();
    await upstream.manifest(repo, 'latest', 'GET', ACCEPT);
    expect(up.requests[0]!.path).toBe(path);
  });

  it('escapes references, keeping the digest colon', () => {
    expect(segment('sha256:abc')).toBe('sha256:abc');
    expect(segment('v1/../x')).toBe('v1%2F..%2Fx');
    expect(repositoryPath('a/b')).toBe('a/b');
  });

  it.each([['..'], ['a/../b'], ['a//b'], ['.'], ['']])('refuses repository %j as a programming error', async (repo) => {
    const { upstream } = setup();
    await expect(upstream.manifest(repo, 'latest', 'GET', ACCEPT)).rejects.toThrow(RangeError);
  });

  it('keeps a path prefix of the upstream URL', async () => {
    const up = new FakeUpstream({ host: 'registry.test' });
    const upstream = new RegistryUpstream({ url: 'https://registry.test/artifactory/api/docker/hub/', fetch: up.fetch });
    await upstream.manifest('library/nginx', 'latest', 'GET', ACCEPT);
    expect(up.requests[0]!.path).toBe('/artifactory/api/docker/hub/v2/library/nginx/manifests/latest');
  });

  it('refuses an upstream URL that is not http(s) or carries credentials', () => {
    const fetch = new FakeUpstream().fetch;
    expect(() => new RegistryUpstream({ url: 'ftp://registry.test', fetch })).toThrow(TypeError);
    expect(() => new RegistryUpstream({ url: 'https://u:p@registry.test', fetch })).toThrow(TypeError);
  });
});
