import { describe, expect, it } from 'vitest';
import { route } from '../../src/core/mirror/routing.js';
import type { MirrorConfig } from '../../src/core/mirror/config.js';
import { errorCode } from '../support/app.js';
import { image } from '../support/images.js';
import { mirrorTest, upstreamConfig } from '../support/mirror.js';

const hub = upstreamConfig({ name: 'hub', url: 'https://registry-1.docker.io', namespace: 'docker.io', default: true });
const ghcr = upstreamConfig({ name: 'ghcr', url: 'https://ghcr.io', namespace: 'ghcr.io', content: { allow: [/^myorg\/.*$/], deny: [/^myorg\/secret$/] } });
const config: MirrorConfig = { upstreams: [hub, ghcr], hosted: ['team/'], fillPartBytes: 1 << 20, fillLeaseMs: 30_000, fillMemoryBytes: 64 << 20 };

describe('routing of names to upstreams', () => {
  it.each([
    // [name, ns, expected kind, upstream, remote]
    ['library/nginx', undefined, 'mirror', 'hub', 'library/nginx'],
    ['nginx', undefined, 'mirror', 'hub', 'library/nginx'],
    ['nginx', 'docker.io', 'mirror', 'hub', 'library/nginx'],
    ['nginx', 'registry-1.docker.io', 'mirror', 'hub', 'library/nginx'],
    ['nginx', 'index.docker.io', 'mirror', 'hub', 'library/nginx'],
    ['hub/nginx', undefined, 'mirror', 'hub', 'library/nginx'],
    ['docker.io/library/nginx', undefined, 'mirror', 'hub', 'library/nginx'],
    ['myorg/app', 'ghcr.io', 'mirror', 'ghcr', 'myorg/app'],
    ['ghcr/myorg/app', undefined, 'mirror', 'ghcr', 'myorg/app'],
    ['ghcr.io/myorg/app', undefined, 'mirror', 'ghcr', 'myorg/app'],
    ['team/app', undefined, 'hosted', undefined, undefined],
    ['team', undefined, 'hosted', undefined, undefined],
  ])('%s (ns=%s) -> %s %s %s', (name, ns, kind, upstream, remote) => {
    const target = route(config, name, ns);
    expect(target.kind).toBe(kind);
    if (target.kind === 'mirror') {
      expect(target.upstream.name).toBe(upstream);
      expect(target.remote).toBe(remote);
      expect(target.name).toBe(`${target.upstream.namespace}/${remote}`);
    }
  });

  it('refuses a namespace that is not configured: ns is a closed-world key', () => {
    expect(() => route(config, 'foo/bar', 'evil.example')).toThrow(/not mirrored/);
  });

  it('applies content rules', () => {
    expect(() => route(config, 'ghcr/other/app', undefined)).toThrow(/content rules/);
    expect(() => route(config, 'ghcr/myorg/secret', undefined)).toThrow(/content rules/);
  });

  it('without upstreams every name is hosted and ns is ignored', () => {
    const none: MirrorConfig = { ...config, upstreams: [] };
    expect(route(none, 'library/nginx', 'docker.io')).toEqual({ kind: 'hosted', name: 'library/nginx' });
  });

  it('without a default upstream bare names are hosted', () => {
    const noDefault: MirrorConfig = { ...config, upstreams: [{ ...hub, default: false }] };
    expect(route(noDefault, 'library/nginx', undefined).kind).toBe('hosted');
  });
});

describe('HTTP: writes into a mirrored namespace', () => {
  it.each([
    ['POST', '/v2/up/library/app/blobs/uploads/'],
    ['PUT', '/v2/up/library/app/manifests/latest'],
    ['DELETE', '/v2/up/library/app/manifests/latest'],
    ['DELETE', `/v2/up/library/app/blobs/sha256:${'a'.repeat(64)}`],
  ])('%s %s is DENIED', async (method, path) => {
    const t = mirrorTest();
    const res = await t.request(path, { method, body: method === 'PUT' ? '{}' : undefined });
    expect(res.status).toBe(403);
    expect(await errorCode(res)).toBe('DENIED');
    expect(res.headers.get('OCI-Namespace')).toBe('registry.test');
    expect(t.up.requests).toHaveLength(0);
  });

  it('an unknown ns is NAME_UNKNOWN and dials nothing', async () => {
    const t = mirrorTest();
    const res = await t.request('/v2/library/app/manifests/latest?ns=ghcr.io');
    expect(res.status).toBe(404);
    expect(await errorCode(res)).toBe('NAME_UNKNOWN');
    expect(t.up.requests).toHaveLength(0);
  });

  it('answers with OCI-Namespace and serves ?ns= pulls', async () => {
    const t = mirrorTest();
    const img = image();
    t.up.addImage('library/app', 'v1', img);
    const res = await t.request('/v2/library/app/manifests/v1?ns=registry.test', { headers: { Accept: img.manifest.mediaType } });
    expect(res.status).toBe(200);
    expect(res.headers.get('OCI-Namespace')).toBe('registry.test');
    expect(Buffer.from(await res.arrayBuffer()).equals(img.manifest.bytes)).toBe(true);
  });

  it('hosted names keep working beside the mirror', async () => {
    const t = mirrorTest({ config: { default: true }, hosted: ['team/'] });
    const res = await t.request('/v2/team/app/tags/list');
    expect(res.status).toBe(404);
    expect(await errorCode(res)).toBe('NAME_UNKNOWN');
    expect(t.up.requests).toHaveLength(0);
  });
});
