import { describe, expect, it } from 'vitest';
import { descriptor, image, index, randomBlob, type Blob } from '../support/images.js';
import { type App, expectCreated, expectPulled, expectUnknown, manifest, pushBlobs, put } from '../support/manifests.js';
import { MAX_MANIFEST_BYTES } from '../../src/core/oci/manifest.js';
import { MediaType } from '../../src/core/oci/media-types.js';
import { expectOciError, failOnServerErrors, guardedApp } from '../support/oci-errors.js';

/**
 * What PUT /v2/<name>/manifests/<reference> refuses (spec.md#pushing-manifests): missing
 * references, invalid documents, digest mismatches, the size limit and the tag grammar.
 * A refused manifest is never stored.
 */

failOnServerErrors();

const { OciManifest: OCI_MANIFEST, OciIndex: OCI_INDEX, DockerManifest: DOCKER_MANIFEST } = MediaType;

describe('references a manifest makes must be in the repository', () => {
  const cases: Array<[string, (t: App) => Promise<{ m: Blob; missing: string }>]> = [
    [
      'a missing layer',
      async (t) => {
        const img = image();
        await t.pushBlob('repo', img.config);
        await t.pushBlob('repo', img.layers[0]!);
        return { m: img.manifest, missing: img.layers[1]!.digest };
      },
    ],
    [
      'a missing config',
      async (t) => {
        const img = image();
        for (const l of img.layers) await t.pushBlob('repo', l);
        return { m: img.manifest, missing: img.config.digest };
      },
    ],
    [
      'a layer that is only in another repository',
      async (t) => {
        const img = image({ layers: [100] });
        await t.pushBlob('repo', img.config);
        await t.pushBlob('other', img.layers[0]!);
        return { m: img.manifest, missing: img.layers[0]!.digest };
      },
    ],
    [
      'a missing child manifest of an index',
      async (t) => {
        const present = image();
        const absent = image();
        await t.pushImage('repo', present, present.manifest.digest);
        await pushBlobs(t, 'repo', absent);
        const m = index([
          { manifest: present.manifest, arch: 'amd64' },
          { manifest: absent.manifest, arch: 'arm64' },
        ]);
        return { m, missing: absent.manifest.digest };
      },
    ],
    [
      'a child manifest that is only a blob, not a manifest',
      async (t) => {
        const child = image();
        await t.pushBlob('repo', child.manifest);
        return { m: index([{ manifest: child.manifest, arch: 'amd64' }]), missing: child.manifest.digest };
      },
    ],
    [
      'a missing config that has urls (only layers may be foreign)',
      async (t) => {
        const img = image();
        for (const l of img.layers) await t.pushBlob('repo', l);
        const doc = { schemaVersion: 2, mediaType: OCI_MANIFEST, config: descriptor(img.config, { urls: ['https://example.com/c'] }), layers: img.layers.map((l) => descriptor(l)) };
        return { m: manifest(doc), missing: img.config.digest };
      },
    ],
    [
      'a missing distributable layer that has urls',
      async (t) => {
        const img = image({ layers: [10] });
        await t.pushBlob('repo', img.config);
        const doc = { schemaVersion: 2, mediaType: OCI_MANIFEST, config: descriptor(img.config), layers: [descriptor(img.layers[0]!, { urls: ['https://example.com/l'] })] };
        return { m: manifest(doc), missing: img.layers[0]!.digest };
      },
    ],
    [
      'a missing child manifest that has urls',
      async () => {
        const child = image();
        const doc = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [descriptor(child.manifest, { urls: ['https://example.com/m'] })] };
        return { m: manifest(doc, OCI_INDEX), missing: child.manifest.digest };
      },
    ],
    [
      'a missing child of a Docker manifest list',
      async () => {
        const child = image({ docker: true });
        return { m: index([{ manifest: child.manifest, arch: 'amd64' }], true), missing: child.manifest.digest };
      },
    ],
  ];

  it.each(cases)('%s is 400 MANIFEST_BLOB_UNKNOWN naming the digest; nothing is stored', async (_, make) => {
    const t = guardedApp();
    const { m, missing } = await make(t);
    const res = await put(t, 'repo', 'v1', m.bytes, m.mediaType);
    const error = await expectOciError(res, { status: 400, code: 'MANIFEST_BLOB_UNKNOWN', message: missing });
    expect(error!.detail).toEqual({ digest: missing });
    await expectUnknown(t, 'repo', 'v1');
    await expectUnknown(t, 'repo', m.digest);
  });

  it('a descriptor whose size differs from the blob is 400 MANIFEST_INVALID', async () => {
    const t = guardedApp();
    const config = randomBlob(20, 'application/vnd.oci.image.config.v1+json');
    const layer = randomBlob(100);
    await t.pushBlob('repo', config);
    await t.pushBlob('repo', layer);
    const m = manifest({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: descriptor(config), layers: [{ ...descriptor(layer), size: 99 }] });
    await expectOciError(await put(t, 'repo', 'v1', m.bytes, OCI_MANIFEST), { status: 400, code: 'MANIFEST_INVALID', message: /99/ });
  });
});

describe('invalid manifests are 400 MANIFEST_INVALID', () => {
  const d = descriptor(randomBlob(10));
  const schema1 = JSON.stringify({ schemaVersion: 1, name: 'repo', tag: 'v1', architecture: 'amd64', fsLayers: [], history: [] });
  const cases: Array<[string, string, string | undefined, RegExp?]> = [
    ['schema 1 by its body', schema1, 'application/json', /schema 1.*not supported/],
    ['schema 1 by its Content-Type', schema1, 'application/vnd.docker.distribution.manifest.v1+json', /schema 1.*not supported/],
    ['signed schema 1', schema1, 'application/vnd.docker.distribution.manifest.v1+prettyjws', /schema 1.*not supported/],
    [
      'a schema 1 mediaType in a schema 2 body',
      JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.docker.distribution.manifest.v1+json' }),
      undefined,
      /schema 1/,
    ],
    ['not JSON', 'this is not json', OCI_MANIFEST, /JSON/],
    ['truncated JSON', '{"schemaVersion": 2, "config": {', OCI_MANIFEST, /JSON/],
    ['invalid UTF-8', '\uFFFD', OCI_MANIFEST],
    ['a JSON array', '[]', OCI_MANIFEST, /object/],
    ['a JSON string', '"manifest"', OCI_MANIFEST, /object/],
    ['an empty body', '', OCI_MANIFEST, /JSON/],
    ['no schemaVersion', JSON.stringify({ mediaType: OCI_MANIFEST, config: d, layers: [] }), OCI_MANIFEST, /schemaVersion/],
    ['schemaVersion 3', JSON.stringify({ schemaVersion: 3, config: d, layers: [] }), OCI_MANIFEST, /schemaVersion/],
    [
      'Content-Type that does not match the body mediaType',
      JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: d, layers: [] }),
      OCI_INDEX,
      /Content-Type/,
    ],
    [
      'a Docker Content-Type for an OCI body',
      JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: d, layers: [] }),
      DOCKER_MANIFEST,
      /Content-Type/,
    ],
    ['an unknown media type', JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.example+json' }), undefined, /unsupported manifest media type/],
    ['a mediaType that is not a string', JSON.stringify({ schemaVersion: 2, mediaType: 7 }), undefined, /mediaType/],
    ['no config', JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, layers: [] }), OCI_MANIFEST, /config/],
    ['no layers', JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: d }), OCI_MANIFEST, /layers/],
    ['layers not an array', JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: d, layers: {} }), OCI_MANIFEST, /layers/],
    [
      'a layer with a bad digest',
      JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: d, layers: [{ ...d, digest: 'sha256:nope' }] }),
      OCI_MANIFEST,
      /layers\[0\]/,
    ],
    [
      'a layer with a negative size',
      JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: d, layers: [{ ...d, size: -1 }] }),
      OCI_MANIFEST,
      /size/,
    ],
    [
      'a config without a mediaType',
      JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { digest: d.digest, size: d.size }, layers: [] }),
      OCI_MANIFEST,
      /config/,
    ],
    ['an index without manifests', JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX }), OCI_INDEX, /manifests/],
    [
      'annotations that are not strings',
      JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: d, layers: [], annotations: { a: 1 } }),
      OCI_MANIFEST,
      /annotations/,
    ],
    [
      'an artifactType that is not a media type',
      JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, artifactType: 'nope', config: d, layers: [] }),
      OCI_MANIFEST,
      /artifactType/,
    ],
    ['a UTF-8 byte order mark before the JSON', `\uFEFF${JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: d, layers: [] })}`, OCI_MANIFEST, /byte order mark/],
    ['4 MiB of empty objects (JSON.parse cost follows the values, not the bytes)', `{"schemaVersion":2,"x":[${Array(1_300_000).fill('{}').join(',')}]}`, OCI_MANIFEST, /more than 100000 values/],
    ['100,001 values in annotations-like arrays', `{"schemaVersion":2,"x":[${Array(100_000).fill('1').join(',')}]}`, OCI_MANIFEST, /more than 100000 values/],
    ['JSON nested 10,000 levels deep', `{"schemaVersion":${'['.repeat(10_000)}${']'.repeat(10_000)}}`, OCI_MANIFEST, /nested deeper than 64/],
    ['an object nested 65 levels deep', `{"schemaVersion":2,"a":${'{"a":'.repeat(64)}1${'}'.repeat(64)}}`, OCI_MANIFEST, /nested deeper/],
    ['a schemaVersion that is a long string', JSON.stringify({ schemaVersion: 'x'.repeat(100_000) }), OCI_MANIFEST, /found a string/],
    [
      'a layer URL that is not http or https',
      JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: d, layers: [{ ...d, mediaType: 'application/vnd.oci.image.layer.nondistributable.v1.tar', urls: ['file:///etc/passwd'] }] }),
      OCI_MANIFEST,
      /http or https/,
    ],
    [
      'a layer URL that is not a URL',
      JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: d, layers: [{ ...d, urls: ['https://'] }] }),
      OCI_MANIFEST,
      /http or https/,
    ],
    [
      'an image manifest with 1000 layers (1001 descriptors with its config)',
      JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: d, layers: Array.from({ length: 1000 }, () => d) }),
      OCI_MANIFEST,
      /at most 1000 descriptors/,
    ],
    [
      'an index with 1001 manifests',
      JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: Array.from({ length: 1001 }, () => ({ ...d, mediaType: OCI_MANIFEST })) }),
      OCI_INDEX,
      /at most 1000 descriptors/,
    ],
    [
      'an unknown media type 100,000 characters long',
      JSON.stringify({ schemaVersion: 2, mediaType: `application/${'x'.repeat(100_000)}` }),
      undefined,
      /unsupported manifest media type/,
    ],
    [
      'a subject that is not a descriptor',
      JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: d, layers: [], subject: 'sha256:abc' }),
      OCI_MANIFEST,
      /subject/,
    ],
  ];

  it.each(cases)('%s', async (_, body, contentType, message) => {
    const t = guardedApp();
    const bytes = body === '\uFFFD' ? Buffer.from([0x7b, 0xff, 0xfe, 0x7d]) : body;
    const res = await put(t, 'repo', 'v1', bytes, contentType);
    // Whatever the client sent, the error names it in a few words, never whole.
    expect(Number(res.headers.get('content-length'))).toBeLessThan(2048);
    await expectOciError(res, { status: 400, code: 'MANIFEST_INVALID', message });
    await expectUnknown(t, 'repo', 'v1');
  });

  it('1000 descriptors in all is the most a manifest may name, and is accepted', async () => {
    const t = guardedApp();
    const config = randomBlob(20, 'application/vnd.oci.image.config.v1+json');
    const layer = randomBlob(10);
    await t.pushBlob('repo', config);
    await t.pushBlob('repo', layer);
    const m = manifest({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: descriptor(config), layers: Array.from({ length: 999 }, () => descriptor(layer)) });
    await expectCreated(await put(t, 'repo', 'v1', m.bytes, OCI_MANIFEST), 'repo', m);
  });
});

describe("a digest's media type is fixed by its first push", () => {
  /** An image manifest without a mediaType field: only the Content-Type says which it is. */
  async function untyped(t: App) {
    const config = randomBlob(20, 'application/vnd.oci.image.config.v1+json');
    await t.pushBlob('repo', config);
    return manifest({ schemaVersion: 2, config: descriptor(config), layers: [] }, OCI_MANIFEST);
  }

  it.each([
    ['by digest', (m: Blob) => m.digest],
    ['by tag', () => 'v2'],
  ])('pushing the same bytes %s with another Content-Type is 400 MANIFEST_INVALID; the first type is still served', async (_, reference) => {
    const t = guardedApp();
    const m = await untyped(t);
    await expectCreated(await put(t, 'repo', 'v1', m.bytes, OCI_MANIFEST), 'repo', m);
    const error = await expectOciError(await put(t, 'repo', reference(m), m.bytes, DOCKER_MANIFEST), {
      status: 400,
      code: 'MANIFEST_INVALID',
      message: /fixed by its first push/,
    });
    expect(error!.detail).toEqual({ digest: m.digest, mediaType: OCI_MANIFEST, pushed: DOCKER_MANIFEST });
    await expectPulled(t, 'repo', m.digest, m, OCI_MANIFEST);
    await expectUnknown(t, 'repo', 'v2');
  });

  it('pushing the same bytes with the same type again is 201 (idempotent)', async () => {
    const t = guardedApp();
    const m = await untyped(t);
    await expectCreated(await put(t, 'repo', 'v1', m.bytes, OCI_MANIFEST), 'repo', m);
    await expectCreated(await put(t, 'repo', 'v2', m.bytes, OCI_MANIFEST), 'repo', m);
    await expectPulled(t, 'repo', 'v2', m, OCI_MANIFEST);
  });

  it('two racing first pushes with different types: exactly one is stored and served', async () => {
    const t = guardedApp();
    const m = await untyped(t);
    const answers = await Promise.all([put(t, 'repo', m.digest, m.bytes, OCI_MANIFEST), put(t, 'repo', m.digest, m.bytes, DOCKER_MANIFEST)]);
    const statuses = answers.map((r) => r.status).sort();
    expect(statuses).toEqual([201, 400]);
    const winner = answers[0]!.status === 201 ? OCI_MANIFEST : DOCKER_MANIFEST;
    await expectPulled(t, 'repo', m.digest, m, winner);
  });

  it('after a delete the digest may be pushed with another type', async () => {
    const t = guardedApp();
    const m = await untyped(t);
    await expectCreated(await put(t, 'repo', m.digest, m.bytes, OCI_MANIFEST), 'repo', m);
    expect((await t.request(`/v2/repo/manifests/${m.digest}`, { method: 'DELETE' })).status).toBe(202);
    await expectCreated(await put(t, 'repo', m.digest, m.bytes, DOCKER_MANIFEST), 'repo', m);
    await expectPulled(t, 'repo', m.digest, m, DOCKER_MANIFEST);
  });
});

describe('PUT by digest', () => {
  it('content that does not match the digest in the URL is 400 DIGEST_INVALID and nothing is stored', async () => {
    const t = guardedApp();
    const img = image();
    const other = image();
    await pushBlobs(t, 'repo', img);
    const res = await put(t, 'repo', other.manifest.digest, img.manifest.bytes, OCI_MANIFEST);
    const error = await expectOciError(res, { status: 400, code: 'DIGEST_INVALID' });
    expect(error!.detail).toEqual({ expected: other.manifest.digest, computed: img.manifest.digest });
    await expectUnknown(t, 'repo', other.manifest.digest);
    await expectUnknown(t, 'repo', img.manifest.digest);
  });

  it.each([
    ['a malformed digest', 'sha256:totallywrong'],
    ['an unsupported algorithm', `md5:${'a'.repeat(32)}`],
    ['upper-case hex', `sha256:${'A'.repeat(64)}`],
  ])('%s is 400 DIGEST_INVALID on every method', async (_, reference) => {
    const t = guardedApp();
    const img = image();
    await pushBlobs(t, 'repo', img);
    for (const method of ['GET', 'HEAD', 'PUT', 'DELETE']) {
      const res = await t.request(`/v2/repo/manifests/${reference}`, {
        method,
        body: method === 'PUT' ? new Uint8Array(img.manifest.bytes) : undefined,
        headers: { 'Content-Type': OCI_MANIFEST },
      });
      await expectOciError(res, { status: 400, code: 'DIGEST_INVALID', head: method === 'HEAD' });
    }
  });
});

describe('the manifest size limit', () => {
  /** A valid, empty OCI index padded by an annotation to exactly `size` bytes. */
  function indexOfSize(size: number): Blob {
    const base = JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [], annotations: { pad: '' } });
    const doc = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [], annotations: { pad: 'x'.repeat(size - base.length) } };
    const m = manifest(doc, OCI_INDEX);
    expect(m.size).toBe(size);
    return m;
  }

  it('a manifest of exactly 4 MiB is accepted', async () => {
    expect(MAX_MANIFEST_BYTES).toBe(4 * 1024 * 1024);
    const t = guardedApp();
    const m = indexOfSize(MAX_MANIFEST_BYTES);
    await expectCreated(await put(t, 'repo', 'big', m.bytes, OCI_INDEX), 'repo', m);
    await expectPulled(t, 'repo', 'big', m);
  });

  it.each([
    ['declared by Content-Length', true],
    ['found while reading a body without Content-Length', false],
  ])('one byte more is 413 SIZE_INVALID naming the limit, %s', async (_, declare) => {
    const t = guardedApp();
    const m = indexOfSize(MAX_MANIFEST_BYTES + 1);
    const headers: Record<string, string> = declare ? { 'Content-Length': String(m.size) } : {};
    const res = await put(t, 'repo', 'big', m.bytes, OCI_INDEX, headers);
    const error = await expectOciError(res, { status: 413, code: 'SIZE_INVALID', message: String(MAX_MANIFEST_BYTES) });
    expect(error!.message).toMatch(/4 MiB/);
    expect(error!.detail).toEqual({ limit: MAX_MANIFEST_BYTES });
    await expectUnknown(t, 'repo', 'big');
  });
});

describe('tag grammar', () => {
  const invalid = [
    ['a leading dot', '.INVALID_MANIFEST_NAME'],
    ['a leading dash', '-tag'],
    ['129 characters', 'x'.repeat(129)],
    ['a plus sign', 'v1+build'],
    ['a percent-encoded slash', 'a%2Fb'],
  ];

  it.each(invalid)('PUT to a tag with %s is 400 MANIFEST_INVALID naming the tag', async (_, tag) => {
    const t = guardedApp();
    const img = image();
    await pushBlobs(t, 'repo', img);
    const error = await expectOciError(await put(t, 'repo', tag, img.manifest.bytes, OCI_MANIFEST), {
      status: 400,
      code: 'MANIFEST_INVALID',
      message: /invalid tag/,
    });
    expect(error!.detail).toEqual({ reference: decodeURIComponent(tag) });
  });

  // Conformance: GET and HEAD of .INVALID_MANIFEST_NAME must be 404, not 400.
  it.each(invalid)('GET, HEAD and DELETE of a tag with %s are 404 MANIFEST_UNKNOWN', async (_, tag) => {
    const t = guardedApp();
    await t.pushImage('repo', image());
    await expectUnknown(t, 'repo', tag);
    await expectOciError(await t.request(`/v2/repo/manifests/${tag}`, { method: 'DELETE' }), { status: 404, code: 'MANIFEST_UNKNOWN' });
  });
});
