import { describe, expect, it } from 'vitest';
import { errorCode } from '../support/app.js';
import { image, index, sha256 } from '../support/images.js';
import { mirrorTest } from '../support/mirror.js';

const ACCEPT = { Accept: 'application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json' };

function manifestRequests(t: ReturnType<typeof mirrorTest>, method?: string) {
  return t.up.requests.filter((r) => r.path.includes('/manifests/') && (method === undefined || r.method === method));
}

describe('mirrored manifests', () => {
  it('a tag is fetched once, then served from cache within its TTL with no upstream request', async () => {
    const t = mirrorTest({ config: { tagTtlMs: 60_000 } });
    const img = image();
    const digest = t.up.addImage('library/app', 'v1', img);
    const first = await t.request('/v2/up/library/app/manifests/v1', { headers: ACCEPT });
    expect(first.status).toBe(200);
    expect(first.headers.get('Docker-Content-Digest')).toBe(digest);
    expect(first.headers.get('Content-Type')).toBe(img.manifest.mediaType);
    expect(Buffer.from(await first.arrayBuffer()).equals(img.manifest.bytes)).toBe(true);
    for (let i = 0; i < 5; i++) {
      const again = await t.request('/v2/up/library/app/manifests/v1', { method: i % 2 ? 'HEAD' : 'GET', headers: ACCEPT });
      expect(again.status).toBe(200);
      await again.arrayBuffer();
    }
    expect(manifestRequests(t)).toHaveLength(1);
    expect(t.metrics.get('outpost_cache_hits_total', { kind: 'manifest' })).toBe(5);
  });

  it('after the TTL one HEAD revalidates; GET only when the digest moved', async () => {
    const t = mirrorTest({ config: { tagTtlMs: 60_000 } });
    t.up.addImage('library/app', 'v1', image());
    await (await t.request('/v2/up/library/app/manifests/v1')).arrayBuffer();
    t.clock.advance(61_000);
    await (await t.request('/v2/up/library/app/manifests/v1')).arrayBuffer();
    expect(manifestRequests(t, 'HEAD')).toHaveLength(1);
    expect(manifestRequests(t, 'GET')).toHaveLength(1);
    const moved = image();
    const movedDigest = t.up.addImage('library/app', 'v1', moved);
    t.clock.advance(61_000);
    const res = await t.request('/v2/up/library/app/manifests/v1');
    expect(res.headers.get('Docker-Content-Digest')).toBe(movedDigest);
    expect(Buffer.from(await res.arrayBuffer()).equals(moved.manifest.bytes)).toBe(true);
    expect(manifestRequests(t, 'HEAD')).toHaveLength(2);
    expect(manifestRequests(t, 'GET')).toHaveLength(2);
  });

  it.each([
    ['503', { kind: 'status', status: 503 } as const],
    ['429', { kind: 'status', status: 429, headers: { 'Retry-After': '30' } } as const],
    ['connection errors', { kind: 'connection-error' } as const],
  ])('stale-if-error: upstream %s serves the cached tag within maxStale, with a Warning', async (_, fault) => {
    const t = mirrorTest({ config: { tagTtlMs: 60_000, maxStaleMs: 3_600_000 } });
    const digest = t.up.addImage('library/app', 'v1', image());
    await (await t.request('/v2/up/library/app/manifests/v1')).arrayBuffer();
    t.clock.advance(120_000);
    t.up.fault({ ...fault, times: Infinity });
    const res = await t.request('/v2/up/library/app/manifests/v1');
    expect(res.status).toBe(200);
    expect(res.headers.get('Docker-Content-Digest')).toBe(digest);
    expect(res.headers.get('Warning')).toMatch(/110/);
    expect(t.metrics.get('outpost_stale_serves_total')).toBe(1);
    // Past maxStale the failure is the answer.
    t.clock.advance(3_600_000);
    const late = await t.request('/v2/up/library/app/manifests/v1');
    expect([429, 503]).toContain(late.status);
    expect(['TOOMANYREQUESTS', 'UNAVAILABLE']).toContain(await errorCode(late));
  });

  it('with nothing cached: 503 when unreachable, 429 with Retry-After when rate-limited, 404 for a missing tag', async () => {
    const t = mirrorTest();
    t.up.fault({ kind: 'connection-error', times: Infinity, match: { path: '/v2/library/down/' } });
    const down = await t.request('/v2/up/library/down/manifests/v1');
    expect(down.status).toBe(503);
    const body = (await down.json()) as { errors: Array<{ code: string; message: string }> };
    expect(body.errors[0]!.code).toBe('UNAVAILABLE');
    expect(body.errors[0]!.message).toContain('"up"');

    t.up.fault({ kind: 'status', status: 429, headers: { 'Retry-After': '120' }, times: Infinity, match: { path: '/v2/library/busy/' } });
    const busy = await t.request('/v2/up/library/busy/manifests/v1');
    expect(busy.status).toBe(429);
    expect(busy.headers.get('Retry-After')).toBe('120');
    expect(await errorCode(busy)).toBe('TOOMANYREQUESTS');

    const missing = await t.request('/v2/up/library/none/manifests/v1');
    expect(missing.status).toBe(404);
    expect(await errorCode(missing)).toBe('MANIFEST_UNKNOWN');
  });

  it('a digest reference is immutable: cached for good, never revalidated', async () => {
    const t = mirrorTest({ config: { tagTtlMs: 1000 } });
    const img = image();
    const digest = t.up.addImage('library/app', undefined, img);
    await (await t.request(`/v2/up/library/app/manifests/${digest}`)).arrayBuffer();
    t.clock.advance(10 * 86_400_000);
    t.up.fault({ kind: 'status', status: 503, times: Infinity });
    const res = await t.request(`/v2/up/library/app/manifests/${digest}`);
    expect(res.status).toBe(200);
    expect(res.headers.get('Warning')).toBeNull();
    expect(Buffer.from(await res.arrayBuffer()).equals(img.manifest.bytes)).toBe(true);
    expect(manifestRequests(t)).toHaveLength(1);
  });

  it('refuses bytes that do not match the digest asked for, and caches nothing', async () => {
    const t = mirrorTest();
    const img = image();
    const digest = t.up.addImage('library/app', undefined, img);
    t.up.fault({ kind: 'wrong-bytes', match: { path: '/manifests/' } });
    const res = await t.request(`/v2/up/library/app/manifests/${digest}`);
    expect(res.status).toBe(502);
    const ok = await t.request(`/v2/up/library/app/manifests/${digest}`);
    expect(ok.status).toBe(200);
    expect(Buffer.from(await ok.arrayBuffer()).equals(img.manifest.bytes)).toBe(true);
  });

  it('concurrent misses of one tag make one upstream request across three instances', async () => {
    const t = mirrorTest({ instances: 3 });
    const img = image();
    const digest = t.up.addImage('library/app', 'v1', img);
    t.up.fault({ kind: 'slow', chunkBytes: 64, delayMs: 5, match: { path: '/manifests/' } });
    const all = await Promise.all(
      Array.from({ length: 12 }, (_, i) => Promise.resolve(t.instances[i % 3]!.request('/v2/up/library/app/manifests/v1')).then(async (r) => ({ status: r.status, digest: r.headers.get('Docker-Content-Digest'), body: Buffer.from(await r.arrayBuffer()) }))),
    );
    for (const r of all) {
      expect(r.status).toBe(200);
      expect(r.digest).toBe(digest);
      expect(r.body.equals(img.manifest.bytes)).toBe(true);
    }
    expect(manifestRequests(t, 'GET')).toHaveLength(1);
  });

  it('an index and its children by digest; content rules on tags', async () => {
    const t = mirrorTest({ config: { content: { allow: [], deny: [], tags: /^v[0-9]+$/ } } });
    const amd = image({ arch: 'amd64' });
    const arm = image({ arch: 'arm64' });
    t.up.addImage('library/app', undefined, amd);
    t.up.addImage('library/app', undefined, arm);
    const idx = index([{ manifest: amd.manifest, arch: 'amd64' }, { manifest: arm.manifest, arch: 'arm64' }]);
    t.up.addManifest('library/app', 'v1', idx.bytes, idx.mediaType);
    t.up.addManifest('library/app', 'latest', idx.bytes, idx.mediaType);
    const top = await t.request('/v2/up/library/app/manifests/v1');
    expect(top.headers.get('Content-Type')).toBe(idx.mediaType);
    expect(top.headers.get('Docker-Content-Digest')).toBe(sha256(idx.bytes));
    const child = await t.request(`/v2/up/library/app/manifests/${arm.manifest.digest}`);
    expect(Buffer.from(await child.arrayBuffer()).equals(arm.manifest.bytes)).toBe(true);
    const denied = await t.request('/v2/up/library/app/manifests/latest');
    expect(denied.status).toBe(403);
    expect(await errorCode(denied)).toBe('DENIED');
  });

  it('tags/list comes from the upstream; the catalog lists the mirrored repository by its qualified name', async () => {
    const t = mirrorTest();
    t.up.addImage('library/app', 'v1', image());
    t.up.addImage('library/app', 'v2', image());
    const tags = await t.request('/v2/up/library/app/tags/list');
    expect(((await tags.json()) as { tags: string[] }).tags.sort()).toEqual(['v1', 'v2']);
    await (await t.request('/v2/up/library/app/manifests/v1')).arrayBuffer();
    const catalog = (await (await t.request('/v2/_catalog')).json()) as { repositories: string[] };
    expect(catalog.repositories).toContain('registry.test/library/app');
  });
});

describe('mirrored referrers', () => {
  it('come from the upstream referrers API, or from the tag schema where it has none', async () => {
    for (const referrersApi of [true, false]) {
      const t = mirrorTest({ upstream: { referrersApi } });
      const img = image();
      const subject = t.up.addImage('library/app', 'v1', img);
      const sig = image({ subject: img.manifest, artifactType: 'application/vnd.dev.sigstore.bundle.v0.3+json' });
      const sigDigest = t.up.addImage('library/app', undefined, sig);
      if (!referrersApi) {
        const idx = JSON.stringify({
          schemaVersion: 2,
          mediaType: 'application/vnd.oci.image.index.v1+json',
          manifests: [{ mediaType: sig.manifest.mediaType, digest: sigDigest, size: sig.manifest.size, artifactType: 'application/vnd.dev.sigstore.bundle.v0.3+json' }],
        });
        t.up.addManifest('library/app', `sha256-${subject.slice(7)}`, idx, 'application/vnd.oci.image.index.v1+json');
      }
      const res = await t.request(`/v2/up/library/app/referrers/${subject}`);
      expect(res.status).toBe(200);
      const body = (await res.json()) as { manifests: Array<{ digest: string }> };
      expect(body.manifests.map((m) => m.digest)).toEqual([sigDigest]);
      const filtered = await t.request(`/v2/up/library/app/referrers/${subject}?artifactType=application/x-other`);
      expect(((await filtered.json()) as { manifests: unknown[] }).manifests).toEqual([]);
      expect(filtered.headers.get('OCI-Filters-Applied')).toBe('artifactType');
    }
  });
});

describe('mirrored listings are cached for the tag TTL', () => {
  it('tags/list and referrers ask the upstream once per TTL', async () => {
    const t = mirrorTest({ config: { tagTtlMs: 60_000 } });
    const img = image();
    const subject = t.up.addImage('library/app', 'v1', img);
    for (let i = 0; i < 3; i++) {
      await (await t.request('/v2/up/library/app/tags/list')).arrayBuffer();
      await (await t.request(`/v2/up/library/app/referrers/${subject}`)).arrayBuffer();
    }
    const count = (what: string) => t.up.requests.filter((r) => r.path.includes(what)).length;
    expect(count('/tags/list')).toBe(1);
    expect(count('/referrers/')).toBe(1);
    t.clock.advance(61_000);
    await (await t.request('/v2/up/library/app/tags/list')).arrayBuffer();
    expect(count('/tags/list')).toBe(2);
  });
});

describe('a token-authenticated upstream', () => {
  it('concurrent cold pulls through a token-authenticated upstream make one token fetch and all succeed', async () => {
    const t = mirrorTest({ upstream: { auth: { scheme: 'bearer' } }, instances: 1 });
    const img = image();
    t.up.addImage('library/app', 'v1', img);
    t.up.fault({ kind: 'slow', chunkBytes: 64, delayMs: 2, match: { host: t.up.authHost } });
    const all = await Promise.all(Array.from({ length: 6 }, () => Promise.resolve(t.request('/v2/up/library/app/manifests/v1')).then((r) => r.status)));
    expect(all).toEqual([200, 200, 200, 200, 200, 200]);
    expect(t.up.requestsTo(t.up.authHost!).length).toBe(1);
  });
});

describe('the upstream rate limit', () => {
  it('is recorded from the upstream headers as a gauge', async () => {
    const t = mirrorTest({ upstream: { rateLimit: { limit: 100, remaining: 42 } } });
    t.up.addImage('library/app', 'v1', image());
    await (await t.request('/v2/up/library/app/manifests/v1')).arrayBuffer();
    const gauge = t.metrics.get('outpost_upstream_ratelimit_remaining', { upstream: 'up' });
    expect(gauge).toBeGreaterThan(0);
    expect(gauge).toBeLessThanOrEqual(42);
    const text = await (await t.request('/metrics')).text();
    expect(text).toContain(`outpost_upstream_ratelimit_remaining{upstream="up"} ${gauge}`);
  });
});
