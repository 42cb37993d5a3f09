import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { EMPTY_CONFIG, artifact, blob, descriptor, image, index, randomBlob, sha256, type Blob, type Image } from '../support/images.js';
import { MAX_MANIFEST_BYTES } from '../../src/core/oci/manifest.js';
import { MediaType } from '../../src/core/oci/media-types.js';
import { expectOciError, failOnServerErrors, guardedApp } from '../support/oci-errors.js';

/** GET/HEAD/PUT/DELETE /v2/<name>/manifests/<reference> (spec.md#pushing-manifests, #pulling-manifests, #deleting-manifests). */

failOnServerErrors();

type App = ReturnType<typeof guardedApp>;

const { OciManifest: OCI_MANIFEST, OciIndex: OCI_INDEX, DockerManifest: DOCKER_MANIFEST, DockerManifestList: DOCKER_LIST } = MediaType;

function manifest(doc: unknown, mediaType: string = OCI_MANIFEST): Blob {
  return blob(JSON.stringify(doc), mediaType);
}

function put(t: App, name: string, reference: string, body: Uint8Array | string, contentType?: string, headers: Record<string, string> = {}) {
  return t.request(`/v2/${name}/manifests/${reference}`, {
    method: 'PUT',
    // A Buffer, so that no Content-Type is sent unless the test names one (a string body would be text/plain).
    body: new Uint8Array(typeof body === 'string' ? Buffer.from(body) : body),
    headers: { ...(contentType ? { 'Content-Type': contentType } : {}), ...headers },
  });
}

async function pushBlobs(t: App, name: string, img: Image) {
  for (const b of [img.config, ...img.layers]) await t.pushBlob(name, b);
}

async function expectPulled(t: App, name: string, reference: string, m: Blob, mediaType = m.mediaType) {
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

async function expectCreated(res: Response, name: string, m: Blob, subject?: string) {
  expect(res.status, await res.clone().text()).toBe(201);
  expect(res.headers.get('location')).toBe(`/v2/${name}/manifests/${m.digest}`);
  expect(res.headers.get('docker-content-digest')).toBe(m.digest);
  expect(res.headers.get('oci-subject')).toBe(subject ?? null);
}

async function expectUnknown(t: App, name: string, reference: string) {
  await expectOciError(await t.request(`/v2/${name}/manifests/${reference}`), { status: 404, code: 'MANIFEST_UNKNOWN' });
  await expectOciError(await t.request(`/v2/${name}/manifests/${reference}`, { method: 'HEAD' }), {
    status: 404,
    code: 'MANIFEST_UNKNOWN',
    head: true,
  });
}

/** The manifest shape the conformance suite pushes: tab-indented, with `data` and unknown fields. */
function conformanceStyle(config: Blob, layer: Blob, withMediaType = true): Blob {
  const doc: Record<string, unknown> = { schemaVersion: 2 };
  if (withMediaType) doc.mediaType = OCI_MANIFEST;
  doc.config = {
    mediaType: 'application/vnd.oci.image.config.v1+json',
    digest: config.digest,
    size: config.size,
    data: config.bytes.toString('base64'),
    newUnspecifiedField: 'aGVsbG8gd29ybGQ=',
  };
  doc.layers = withMediaType ? [{ ...descriptor(layer), newUnspecifiedField: null }] : [];
  return blob(JSON.stringify(doc, null, '\t'), OCI_MANIFEST);
}

describe('pushing and pulling each kind of manifest', () => {
  const cases: Array<[string, (t: App) => Promise<{ m: Blob; subject?: string }>]> = [
    [
      'an OCI image manifest',
      async (t) => {
        const img = image();
        await pushBlobs(t, 'repo', img);
        return { m: img.manifest };
      },
    ],
    [
      'a Docker schema 2 manifest',
      async (t) => {
        const img = image({ docker: true });
        await pushBlobs(t, 'repo', img);
        return { m: img.manifest };
      },
    ],
    [
      'an OCI index',
      async (t) => {
        const amd = image({ arch: 'amd64' });
        const arm = image({ arch: 'arm64' });
        await t.pushImage('repo', amd, amd.manifest.digest);
        await t.pushImage('repo', arm, arm.manifest.digest);
        return { m: index([{ manifest: amd.manifest, arch: 'amd64' }, { manifest: arm.manifest, arch: 'arm64' }]) };
      },
    ],
    [
      'a Docker manifest list',
      async (t) => {
        const amd = image({ arch: 'amd64', docker: true });
        await t.pushImage('repo', amd, amd.manifest.digest);
        return { m: index([{ manifest: amd.manifest, arch: 'amd64' }], true) };
      },
    ],
    [
      'an empty OCI index',
      async () => ({ m: manifest({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] }, OCI_INDEX) }),
    ],
    [
      'an artifact with artifactType and the empty config',
      async (t) => {
        const subject = image();
        await t.pushImage('repo', subject);
        const a = artifact(subject.manifest, 'application/vnd.example.sbom', { 'org.example': 'x' });
        await pushBlobs(t, 'repo', a);
        return { m: a.manifest, subject: subject.manifest.digest };
      },
    ],
    [
      'an artifact with no blobs at all',
      async (t) => {
        await t.pushBlob('repo', EMPTY_CONFIG);
        const doc = {
          schemaVersion: 2,
          mediaType: OCI_MANIFEST,
          artifactType: 'application/vnd.example.note',
          config: descriptor(EMPTY_CONFIG),
          layers: [descriptor(EMPTY_CONFIG)],
        };
        return { m: manifest(doc) };
      },
    ],
    [
      'an artifact whose subject was never pushed',
      async (t) => {
        const missing = image().manifest;
        const a = artifact(missing, 'application/vnd.example.sig');
        await pushBlobs(t, 'repo', a);
        return { m: a.manifest, subject: missing.digest };
      },
    ],
    [
      'an index with a subject and artifactType',
      async (t) => {
        const subject = image();
        await t.pushImage('repo', subject);
        const child = artifact(subject.manifest, 'application/vnd.example.a');
        await pushBlobs(t, 'repo', child);
        expect((await t.pushManifest('repo', child.manifest.digest, child.manifest)).status).toBe(201);
        const doc = {
          schemaVersion: 2,
          mediaType: OCI_INDEX,
          artifactType: 'application/vnd.food.stand',
          manifests: [descriptor(child.manifest)],
          subject: descriptor(subject.manifest),
          annotations: { 'org.opencontainers.conformance.test': 'test index' },
        };
        return { m: manifest(doc, OCI_INDEX), subject: subject.manifest.digest };
      },
    ],
    [
      'a tab-indented manifest with data and unknown fields (as the conformance suite sends)',
      async (t) => {
        const config = blob(JSON.stringify({ author: 'x', architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }, null, '\t'));
        const layer = randomBlob(168);
        await t.pushBlob('repo', config);
        await t.pushBlob('repo', layer);
        return { m: conformanceStyle(config, layer) };
      },
    ],
    [
      'an image manifest with no layers and no mediaType field (Content-Type decides)',
      async (t) => {
        const config = randomBlob(129, 'application/vnd.oci.image.config.v1+json');
        await t.pushBlob('repo', config);
        return { m: conformanceStyle(config, config, false) };
      },
    ],
    [
      'a layer with urls that is not in the registry (non-distributable)',
      async (t) => {
        const config = randomBlob(20, 'application/vnd.oci.image.config.v1+json');
        await t.pushBlob('repo', config);
        const foreign = randomBlob(10, 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip');
        const doc = {
          schemaVersion: 2,
          mediaType: OCI_MANIFEST,
          config: descriptor(config),
          layers: [descriptor(foreign, { urls: ['https://example.com/layer'] })],
        };
        return { m: manifest(doc) };
      },
    ],
  ];

  it.each(cases)('%s: PUT by tag is 201; GET and HEAD by tag and digest', async (_, make) => {
    const t = guardedApp();
    const { m, subject } = await make(t);
    await expectCreated(await put(t, 'repo', 'v1', m.bytes, m.mediaType), 'repo', m, subject);
    await expectPulled(t, 'repo', 'v1', m);
    await expectPulled(t, 'repo', m.digest, m);
  });

  it.each(cases)('%s: PUT by digest is 201 and leaves no tag', async (_, make) => {
    const t = guardedApp();
    const { m, subject } = await make(t);
    await expectCreated(await put(t, 'repo', m.digest, m.bytes, m.mediaType), 'repo', m, subject);
    await expectPulled(t, 'repo', m.digest, m);
    const tags = (await (await t.request('/v2/repo/tags/list')).json()) as { tags: string[] };
    expect(tags.tags).not.toContain(m.digest);
  });

  it('a generic Content-Type lets the body mediaType decide', async () => {
    const t = guardedApp();
    const img = image();
    await pushBlobs(t, 'repo', img);
    for (const contentType of ['application/json', 'application/octet-stream', undefined]) {
      await expectCreated(await put(t, 'repo', 'v1', img.manifest.bytes, contentType), 'repo', img.manifest);
    }
    await expectPulled(t, 'repo', 'v1', img.manifest, OCI_MANIFEST);
  });

  it('Content-Type parameters are ignored', async () => {
    const t = guardedApp();
    const img = image();
    await pushBlobs(t, 'repo', img);
    await expectCreated(await put(t, 'repo', 'v1', img.manifest.bytes, `${OCI_MANIFEST}; charset=utf-8`), 'repo', img.manifest);
    await expectPulled(t, 'repo', 'v1', img.manifest, OCI_MANIFEST);
  });

  it('a manifest pushed by sha512 digest is stored under it', async () => {
    const t = guardedApp();
    const img = image();
    await pushBlobs(t, 'repo', img);
    const digest = `sha512:${createHash('sha512').update(img.manifest.bytes).digest('hex')}`;
    const res = await put(t, 'repo', digest, img.manifest.bytes, OCI_MANIFEST);
    expect(res.status).toBe(201);
    expect(res.headers.get('docker-content-digest')).toBe(digest);
    await expectPulled(t, 'repo', digest, { ...img.manifest, digest });
  });
});

describe('tags and re-pushes', () => {
  it('the same manifest may be pushed again and under several tags: 201 each time', async () => {
    const t = guardedApp();
    const img = image();
    await pushBlobs(t, 'repo', img);
    for (const tag of ['test0', 'test1', 'test2', 'test3', 'test0']) {
      await expectCreated(await put(t, 'repo', tag, img.manifest.bytes, OCI_MANIFEST), 'repo', img.manifest);
      await expectPulled(t, 'repo', tag, img.manifest);
    }
  });

  it('a tag can be moved to another manifest', async () => {
    const t = guardedApp();
    const a = image();
    const b = image();
    await t.pushImage('repo', a, 'tagtest0');
    await t.pushImage('repo', b, 'tagtest0');
    await expectPulled(t, 'repo', 'tagtest0', b.manifest);
    await expectPulled(t, 'repo', a.manifest.digest, a.manifest);
  });

  it.each([['a'], ['_under'], ['UPPER.case-1_2'], ['x'.repeat(128)]])('tag %s follows the grammar', async (tag) => {
    const t = guardedApp();
    const img = image();
    await t.pushImage('repo', img, tag);
    await expectPulled(t, 'repo', tag, img.manifest);
  });
});

describe('manifests are per repository', () => {
  it('a manifest pushed to one repository is unknown in another', async () => {
    const t = guardedApp();
    const img = image();
    await t.pushImage('one', img, 'v1');
    await expectUnknown(t, 'two', img.manifest.digest);
    await expectUnknown(t, 'two', 'v1');
  });
});

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
    await expectOciError(res, { status: 400, code: 'MANIFEST_INVALID', message });
    await expectUnknown(t, 'repo', 'v1');
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

describe('pulling what is not there', () => {
  it.each([
    ['an unknown tag', 'nope'],
    ['an unknown digest', sha256('hello world')],
  ])('%s is 404 MANIFEST_UNKNOWN, in a known and an unknown repository', async (_, reference) => {
    const t = guardedApp();
    await t.pushImage('repo', image());
    await expectUnknown(t, 'repo', reference);
    await expectUnknown(t, 'never/pushed', reference);
  });

  it('a digest that is only a blob in the repository is not a manifest', async () => {
    const t = guardedApp();
    const b = randomBlob(10);
    await t.pushBlob('repo', b);
    await expectUnknown(t, 'repo', b.digest);
  });

  it('an invalid repository name is 400 NAME_INVALID', async () => {
    const t = guardedApp();
    await expectOciError(await t.request('/v2/Bad_Name/manifests/latest'), { status: 400, code: 'NAME_INVALID' });
  });
});

describe('deleting manifests', () => {
  it('DELETE by digest is 202; then GET by digest and by every tag is 404 MANIFEST_UNKNOWN', async () => {
    const t = guardedApp();
    const img = image();
    const keep = image();
    await t.pushImage('repo', img, 'a');
    await t.pushImage('repo', img, 'b');
    await t.pushImage('repo', keep, 'c');
    const res = await t.request(`/v2/repo/manifests/${img.manifest.digest}`, { method: 'DELETE' });
    expect(res.status).toBe(202);
    expect(await res.text()).toBe('');
    await expectUnknown(t, 'repo', img.manifest.digest);
    await expectUnknown(t, 'repo', 'a');
    await expectUnknown(t, 'repo', 'b');
    await expectPulled(t, 'repo', 'c', keep.manifest);
    const tags = (await (await t.request('/v2/repo/tags/list')).json()) as { tags: string[] };
    expect(tags.tags).toEqual(['c']);
  });

  it('DELETE by tag is 202 and removes only that tag', async () => {
    const t = guardedApp();
    const img = image();
    await t.pushImage('repo', img, 'a');
    await t.pushImage('repo', img, 'b');
    const res = await t.request('/v2/repo/manifests/a', { method: 'DELETE' });
    expect(res.status).toBe(202);
    await expectUnknown(t, 'repo', 'a');
    await expectPulled(t, 'repo', 'b', img.manifest);
    await expectPulled(t, 'repo', img.manifest.digest, img.manifest);
  });

  it('the tag list shrinks and stays 200 when the last tag goes', async () => {
    const t = guardedApp();
    const img = image();
    await t.pushImage('repo', img, 'tagtest0');
    expect((await t.request('/v2/repo/manifests/tagtest0', { method: 'DELETE' })).status).toBe(202);
    expect((await t.request(`/v2/repo/manifests/${img.manifest.digest}`, { method: 'DELETE' })).status).toBe(202);
    const res = await t.request('/v2/repo/tags/list');
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ name: 'repo', tags: [] });
  });

  it.each([
    ['an unknown tag', 'nope'],
    ['an unknown digest', sha256('hello world')],
  ])('DELETE of %s is 404 MANIFEST_UNKNOWN', async (_, reference) => {
    const t = guardedApp();
    await t.pushImage('repo', image());
    await expectOciError(await t.request(`/v2/repo/manifests/${reference}`, { method: 'DELETE' }), { status: 404, code: 'MANIFEST_UNKNOWN' });
  });

  it('a second DELETE by digest is 404', async () => {
    const t = guardedApp();
    const img = image();
    await t.pushImage('repo', img);
    expect((await t.request(`/v2/repo/manifests/${img.manifest.digest}`, { method: 'DELETE' })).status).toBe(202);
    await expectOciError(await t.request(`/v2/repo/manifests/${img.manifest.digest}`, { method: 'DELETE' }), {
      status: 404,
      code: 'MANIFEST_UNKNOWN',
    });
  });

  it('a deleted manifest can be pushed again', async () => {
    const t = guardedApp();
    const img = image();
    await t.pushImage('repo', img);
    expect((await t.request(`/v2/repo/manifests/${img.manifest.digest}`, { method: 'DELETE' })).status).toBe(202);
    await expectCreated(await put(t, 'repo', 'latest', img.manifest.bytes, OCI_MANIFEST), 'repo', img.manifest);
    await expectPulled(t, 'repo', 'latest', img.manifest);
  });

  it('a manifest an index refers to may be deleted (the conformance teardown does), the index stays', async () => {
    const t = guardedApp();
    const child = image();
    await t.pushImage('repo', child, child.manifest.digest);
    const idx = index([{ manifest: child.manifest, arch: 'amd64' }]);
    await expectCreated(await put(t, 'repo', 'multi', idx.bytes, OCI_INDEX), 'repo', idx);
    expect((await t.request(`/v2/repo/manifests/${child.manifest.digest}`, { method: 'DELETE' })).status).toBe(202);
    await expectUnknown(t, 'repo', child.manifest.digest);
    await expectPulled(t, 'repo', 'multi', idx);
  });

  it('deleting from one repository leaves the same manifest in another', async () => {
    const t = guardedApp();
    const img = image();
    await t.pushImage('one', img);
    await t.pushImage('two', img);
    expect((await t.request(`/v2/one/manifests/${img.manifest.digest}`, { method: 'DELETE' })).status).toBe(202);
    await expectUnknown(t, 'one', 'latest');
    await expectPulled(t, 'two', 'latest', img.manifest);
  });
});

describe('Docker manifests report their own media types', () => {
  it.each([
    ['schema 2', DOCKER_MANIFEST],
    ['manifest list', DOCKER_LIST],
  ])('%s', async (_, mediaType) => {
    const t = guardedApp();
    const img = image({ docker: true });
    await t.pushImage('repo', img, img.manifest.digest);
    const m = mediaType === DOCKER_MANIFEST ? img.manifest : index([{ manifest: img.manifest, arch: 'amd64' }], true);
    await expectCreated(await put(t, 'repo', 'v1', m.bytes, mediaType), 'repo', m);
    const res = await t.request('/v2/repo/manifests/v1');
    expect(res.headers.get('content-type')).toBe(mediaType);
  });
});
