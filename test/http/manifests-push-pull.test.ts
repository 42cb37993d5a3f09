import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { EMPTY_CONFIG, artifact, blob, descriptor, image, index, randomBlob, sha256, type Blob } from '../support/images.js';
import { type App, expectCreated, expectPulled, expectUnknown, manifest, pushBlobs, put } from '../support/manifests.js';
import { MediaType } from '../../src/core/oci/media-types.js';
import { expectOciError, failOnServerErrors, guardedApp } from '../support/oci-errors.js';

/**
 * PUT, GET and HEAD /v2/<name>/manifests/<reference> (spec.md#pushing-manifests, #pulling-manifests):
 * every kind of manifest round-trips, tags move and repeat, and what is not there is 404.
 */

failOnServerErrors();

const { OciManifest: OCI_MANIFEST, OciIndex: OCI_INDEX, DockerManifest: DOCKER_MANIFEST, DockerManifestList: DOCKER_LIST } = MediaType;

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
  it('indexes naming the same children, pushed at once, are all created (each rewrites the child records, retrying when another wins)', async () => {
    const t = guardedApp();
    const amd = image({ arch: 'amd64' });
    const arm = image({ arch: 'arm64' });
    for (const img of [amd, arm]) {
      await pushBlobs(t, 'repo', img);
      await expectCreated(await put(t, 'repo', img.manifest.digest, img.manifest.bytes, OCI_MANIFEST), 'repo', img.manifest);
    }
    const lists = Array.from({ length: 8 }, (_, i) => {
      const doc = JSON.parse(index([{ manifest: amd.manifest, arch: 'amd64' }, { manifest: arm.manifest, arch: 'arm64' }]).bytes.toString());
      return blob(JSON.stringify({ ...doc, annotations: { n: String(i) } }), doc.mediaType);
    });
    const answers = await Promise.all(lists.map((l, i) => put(t, 'repo', `v${i}`, l.bytes, l.mediaType)));
    expect(answers.map((r) => r.status)).toEqual(Array(8).fill(201));
  });

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
