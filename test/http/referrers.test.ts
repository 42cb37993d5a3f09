import { describe, expect, it } from 'vitest';
import { EMPTY_CONFIG, artifact, blob, descriptor, image, sha256, type Blob } from '../support/images.js';
import { MediaType } from '../../src/core/oci/media-types.js';
import { expectOciError, failOnServerErrors, guardedApp } from '../support/oci-errors.js';

/** GET /v2/<name>/referrers/<digest>[?artifactType=] (spec.md#listing-referrers). */

failOnServerErrors();

type App = ReturnType<typeof guardedApp>;

const { OciManifest: OCI_MANIFEST, OciIndex: OCI_INDEX } = MediaType;
const ANNOTATION = 'org.opencontainers.conformance.test';
const TYPE_A = 'application/vnd.nhl.peanut.butter.bagel';
const TYPE_B = 'application/vnd.nba.strawberry.jam.croissant';

interface ReferrersBody {
  schemaVersion: number;
  mediaType: string;
  manifests: Array<{ mediaType: string; digest: string; size: number; artifactType?: string; annotations?: Record<string, string> }>;
}

async function referrers(t: App, name: string, subject: string, query = ''): Promise<{ res: Response; body: ReferrersBody }> {
  const res = await t.request(`/v2/${name}/referrers/${subject}${query}`);
  expect(res.status).toBe(200);
  // Exactly this: the conformance suite compares the whole string.
  expect(res.headers.get('content-type')).toBe(OCI_INDEX);
  const body = (await res.json()) as ReferrersBody;
  expect(body.schemaVersion).toBe(2);
  expect(body.mediaType).toBe(OCI_INDEX);
  expect(Array.isArray(body.manifests)).toBe(true);
  return { res, body };
}

const byDigest = (a: { digest: string }, b: { digest: string }) => a.digest.localeCompare(b.digest);

async function putManifest(t: App, name: string, m: Blob, expectedSubject?: string) {
  const res = await t.pushManifest(name, m.digest, m);
  expect(res.status, await res.clone().text()).toBe(201);
  expect(res.headers.get('oci-subject')).toBe(expectedSubject ?? null);
}

/** An image manifest with a subject and no artifactType: its config media type stands in. */
function configArtifact(subject: Blob, config: Blob, annotations?: Record<string, string>): Blob {
  const doc: Record<string, unknown> = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: descriptor(config),
    layers: [descriptor(EMPTY_CONFIG)],
    subject: descriptor(subject),
  };
  if (annotations) doc.annotations = annotations;
  return blob(JSON.stringify(doc, null, '\t'), OCI_MANIFEST);
}

/** The referrers the conformance suite pushes for one subject (section D4 of its setup). */
async function conformanceScenario() {
  const t = guardedApp();
  const subject = image();
  const refBlobA = blob('NHL Peanut Butter on my NHL bagel', TYPE_A);
  const refBlobB = blob('NBA Strawberry Jam on my NBA croissant', TYPE_B);
  for (const b of [EMPTY_CONFIG, refBlobA, refBlobB]) await t.pushBlob('repo', b);

  const aConfig = configArtifact(subject.manifest, refBlobA, { [ANNOTATION]: 'test config a' });
  const bConfig = configArtifact(subject.manifest, refBlobB, { [ANNOTATION]: 'test config b' });
  const layerArtifact = (b: Blob, type: string, value: string, s: Blob) =>
    blob(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        artifactType: type,
        config: descriptor(EMPTY_CONFIG),
        layers: [descriptor(b)],
        subject: descriptor(s),
        ...(value ? { annotations: { [ANNOTATION]: value } } : {}),
      }),
      OCI_MANIFEST,
    );
  const aLayer = layerArtifact(refBlobA, TYPE_A, 'test layer a', subject.manifest);
  const bLayer = layerArtifact(refBlobB, TYPE_B, 'test layer b', subject.manifest);
  const never = image().manifest;
  const cLayer = layerArtifact(refBlobB, TYPE_B, '', never);
  const refIndex = blob(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      artifactType: 'application/vnd.food.stand',
      manifests: [descriptor(aConfig), descriptor(aLayer)],
      subject: descriptor(subject.manifest),
      annotations: { [ANNOTATION]: 'test index' },
    }),
    OCI_INDEX,
  );

  // Referrers may arrive before their subject.
  await putManifest(t, 'repo', aConfig, subject.manifest.digest);
  await putManifest(t, 'repo', aLayer, subject.manifest.digest);
  await putManifest(t, 'repo', refIndex, subject.manifest.digest);
  await t.pushImage('repo', subject, 'tagtest0');
  await putManifest(t, 'repo', bConfig, subject.manifest.digest);
  await putManifest(t, 'repo', bLayer, subject.manifest.digest);
  await putManifest(t, 'repo', cLayer, never.digest);

  const expected = [
    { m: aConfig, artifactType: TYPE_A, value: 'test config a' },
    { m: aLayer, artifactType: TYPE_A, value: 'test layer a' },
    { m: refIndex, artifactType: 'application/vnd.food.stand', value: 'test index' },
    { m: bConfig, artifactType: TYPE_B, value: 'test config b' },
    { m: bLayer, artifactType: TYPE_B, value: 'test layer b' },
  ].map(({ m, artifactType, value }) => ({
    mediaType: m.mediaType,
    digest: m.digest,
    size: m.size,
    artifactType,
    annotations: { [ANNOTATION]: value },
  }));
  return { t, subject, never, cLayer, aLayer, expected };
}

describe('listing referrers', () => {
  it('lists every referrer as a descriptor with artifactType and annotations, in an OCI index', async () => {
    const { t, subject, expected } = await conformanceScenario();
    const { res, body } = await referrers(t, 'repo', subject.manifest.digest);
    expect(res.headers.get('oci-filters-applied')).toBeNull();
    expect(Object.keys(body).sort()).toEqual(['manifests', 'mediaType', 'schemaVersion']);
    expect([...body.manifests].sort(byDigest)).toEqual([...expected].sort(byDigest));
  });

  it('an image manifest with a subject but no artifactType reports config.mediaType as artifactType', async () => {
    const t = guardedApp();
    const subject = image();
    await t.pushImage('repo', subject);
    const config = blob('{"signature":true}', 'application/vnd.example.signature.config.v1+json');
    await t.pushBlob('repo', config);
    await t.pushBlob('repo', EMPTY_CONFIG);
    const m = configArtifact(subject.manifest, config);
    await putManifest(t, 'repo', m, subject.manifest.digest);
    const { body } = await referrers(t, 'repo', subject.manifest.digest);
    expect(body.manifests).toEqual([{ mediaType: OCI_MANIFEST, digest: m.digest, size: m.size, artifactType: config.mediaType }]);
  });

  it('a referrer without annotations has none in its descriptor', async () => {
    const t = guardedApp();
    const subject = image();
    await t.pushImage('repo', subject);
    const a = artifact(subject.manifest, 'application/vnd.example.sbom');
    await t.pushImage('repo', a, a.manifest.digest);
    const { body } = await referrers(t, 'repo', subject.manifest.digest);
    expect(body.manifests).toEqual([
      { mediaType: OCI_MANIFEST, digest: a.manifest.digest, size: a.manifest.size, artifactType: 'application/vnd.example.sbom' },
    ]);
  });

  it('a referrer of a subject that was never pushed is listed', async () => {
    const { t, never, cLayer } = await conformanceScenario();
    const { body } = await referrers(t, 'repo', never.digest);
    expect(body.manifests.map((d) => d.digest)).toEqual([cLayer.digest]);
    expect(body.manifests[0]!.annotations).toBeUndefined();
  });

  it.each([
    ['a digest nothing refers to', sha256('hello world')],
    ['a pushed manifest without referrers', 'subject'],
  ])('%s has an empty list, 200', async (_, which) => {
    const t = guardedApp();
    const subject = image();
    await t.pushImage('repo', subject);
    const digest = which === 'subject' ? subject.manifest.digest : which;
    const { res, body } = await referrers(t, 'repo', digest);
    expect(body.manifests).toEqual([]);
    expect(res.headers.get('link')).toBeNull();
  });

  it('an unknown repository has an empty list, 200', async () => {
    const t = guardedApp();
    const { body } = await referrers(t, 'never/pushed', sha256('x'));
    expect(body.manifests).toEqual([]);
  });

  it('referrers are per repository', async () => {
    const t = guardedApp();
    const subject = image();
    await t.pushImage('one', subject);
    await t.pushImage('two', subject);
    const a = artifact(subject.manifest, 'application/vnd.example.sbom');
    await t.pushImage('one', a, a.manifest.digest);
    expect((await referrers(t, 'one', subject.manifest.digest)).body.manifests).toHaveLength(1);
    expect((await referrers(t, 'two', subject.manifest.digest)).body.manifests).toEqual([]);
  });

  it('pushing a referrer again, by digest and by tag, lists it once', async () => {
    const t = guardedApp();
    const subject = image();
    await t.pushImage('repo', subject);
    const a = artifact(subject.manifest, 'application/vnd.example.sbom');
    await t.pushImage('repo', a, a.manifest.digest);
    await t.pushImage('repo', a, 'sbom');
    await t.pushImage('repo', a, 'sbom');
    expect((await referrers(t, 'repo', subject.manifest.digest)).body.manifests).toHaveLength(1);
  });

  it('HEAD answers 200 with the index Content-Type and no body', async () => {
    const t = guardedApp();
    const res = await t.request(`/v2/repo/referrers/${sha256('x')}`, { method: 'HEAD' });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe(OCI_INDEX);
    expect(await res.text()).toBe('');
  });
});

describe('filtering by artifactType', () => {
  it.each([
    ['a type held by an artifactType and by a config media type', TYPE_A, ['test config a', 'test layer a']],
    ['the other type', TYPE_B, ['test config b', 'test layer b']],
    ['an index artifactType', 'application/vnd.food.stand', ['test index']],
    ['a type nothing has', 'application/vnd.example.none', []],
  ])('%s: only matches, with OCI-Filters-Applied: artifactType', async (_, type, values) => {
    const { t, subject, expected } = await conformanceScenario();
    const { res, body } = await referrers(t, 'repo', subject.manifest.digest, `?artifactType=${encodeURIComponent(type)}`);
    expect(res.headers.get('oci-filters-applied')).toBe('artifactType');
    const want = expected.filter((d) => values.includes(d.annotations[ANNOTATION]!));
    expect([...body.manifests].sort(byDigest)).toEqual(want.sort(byDigest));
    for (const d of body.manifests) expect(d.artifactType).toBe(type);
  });

  it('an unencoded slash in artifactType works too', async () => {
    const { t, subject } = await conformanceScenario();
    const { res, body } = await referrers(t, 'repo', subject.manifest.digest, `?artifactType=${TYPE_A}`);
    expect(res.headers.get('oci-filters-applied')).toBe('artifactType');
    expect(body.manifests).toHaveLength(2);
  });

  it('an empty artifactType is no filter', async () => {
    const { t, subject } = await conformanceScenario();
    const { res, body } = await referrers(t, 'repo', subject.manifest.digest, '?artifactType=');
    expect(res.headers.get('oci-filters-applied')).toBeNull();
    expect(body.manifests).toHaveLength(5);
  });

  it('an artifactType that is not a media type is 400', async () => {
    const t = guardedApp();
    const res = await t.request(`/v2/repo/referrers/${sha256('x')}?artifactType=not-a-media-type`);
    await expectOciError(res, { status: 400, code: 'UNSUPPORTED', message: /artifactType/ });
  });
});

describe('referrers follow deletes', () => {
  it('deleting a referrer by digest removes it from the list', async () => {
    const { t, subject, aLayer, expected } = await conformanceScenario();
    expect((await t.request(`/v2/repo/manifests/${aLayer.digest}`, { method: 'DELETE' })).status).toBe(202);
    const { body } = await referrers(t, 'repo', subject.manifest.digest);
    expect(body.manifests.map((d) => d.digest).sort()).toEqual(
      expected
        .map((d) => d.digest)
        .filter((d) => d !== aLayer.digest)
        .sort(),
    );
    const filtered = await referrers(t, 'repo', subject.manifest.digest, `?artifactType=${encodeURIComponent(TYPE_A)}`);
    expect(filtered.body.manifests).toHaveLength(1);
  });

  it('deleting the subject keeps its referrers listed', async () => {
    const { t, subject, expected } = await conformanceScenario();
    expect((await t.request(`/v2/repo/manifests/${subject.manifest.digest}`, { method: 'DELETE' })).status).toBe(202);
    const { body } = await referrers(t, 'repo', subject.manifest.digest);
    expect([...body.manifests].sort(byDigest)).toEqual([...expected].sort(byDigest));
  });

  it('deleting a tag of a referrer keeps it listed', async () => {
    const t = guardedApp();
    const subject = image();
    await t.pushImage('repo', subject);
    const a = artifact(subject.manifest, 'application/vnd.example.sbom');
    await t.pushImage('repo', a, 'sbom');
    expect((await t.request('/v2/repo/manifests/sbom', { method: 'DELETE' })).status).toBe(202);
    expect((await referrers(t, 'repo', subject.manifest.digest)).body.manifests).toHaveLength(1);
  });
});

describe('invalid requests', () => {
  it.each([
    ['a malformed digest', '/v2/repo/referrers/sha256:abc', 400, 'DIGEST_INVALID'],
    ['a tag instead of a digest', '/v2/repo/referrers/latest', 400, 'DIGEST_INVALID'],
    ['an unsupported algorithm', `/v2/repo/referrers/md5:${'a'.repeat(32)}`, 400, 'DIGEST_INVALID'],
    ['an invalid repository name', `/v2/Repo/referrers/${sha256('x')}`, 400, 'NAME_INVALID'],
  ])('%s is %i %s', async (_, path, status, code) => {
    const t = guardedApp();
    await expectOciError(await t.request(path), { status, code });
  });
});

describe('bounded listings', () => {
  /** A referrer of `subject` whose annotations take about `bytes` bytes. */
  function annotated(subject: Blob, bytes: number, n: number): Blob {
    return configArtifact(subject, EMPTY_CONFIG, { [ANNOTATION]: `${n}:${'x'.repeat(bytes)}` });
  }

  /** Follows Link headers from the first page; returns every page's byte length and all descriptors. */
  async function allPages(t: App, name: string, subject: string, query = '') {
    const pages: number[] = [];
    const manifests: ReferrersBody['manifests'] = [];
    let path: string | undefined = `/v2/${name}/referrers/${subject}${query}`;
    while (path) {
      const res = await t.request(path);
      expect(res.status).toBe(200);
      const text = await res.text();
      pages.push(Buffer.byteLength(text));
      manifests.push(...(JSON.parse(text) as ReferrersBody).manifests);
      const link = res.headers.get('link');
      path = link ? /^<([^>]+)>; rel="next"$/.exec(link)![1] : undefined;
      expect(pages.length).toBeLessThan(100);
    }
    return { pages, manifests };
  }

  it('referrers with large annotations are paged within 4 MiB by Link, each with its annotations; no index item holds them', async () => {
    const t = guardedApp();
    const subject = image();
    await t.pushBlob('repo', EMPTY_CONFIG);
    const pushed = Array.from({ length: 12 }, (_, n) => annotated(subject.manifest, 600_000, n));
    for (const m of pushed) await putManifest(t, 'repo', m, subject.manifest.digest);

    const { pages, manifests } = await allPages(t, 'repo', subject.manifest.digest);
    expect(pages.length).toBeGreaterThan(1);
    for (const size of pages) expect(size).toBeLessThanOrEqual(4 * 1024 * 1024);
    expect(manifests.map((d) => d.digest).sort()).toEqual(pushed.map((m) => m.digest).sort());
    for (const d of manifests) {
      const m = pushed.find((p) => p.digest === d.digest)!;
      expect(d.annotations).toEqual((JSON.parse(new TextDecoder().decode(m.bytes)) as { annotations: unknown }).annotations);
    }
    // What the index holds per manifest stays small (DynamoDB caps an item at 400 KB).
    for (const pk of [`manifest#repo`, `referrer#repo#${subject.manifest.digest}`]) {
      for (const { item } of await t.index.list(pk, { limit: 1000 })) expect(JSON.stringify(item.value).length).toBeLessThan(10_000);
    }
  });

  it('small annotations stay in the index and a listing reads no manifest', async () => {
    const t = guardedApp();
    const subject = image();
    await t.pushBlob('repo', EMPTY_CONFIG);
    const m = annotated(subject.manifest, 100, 1);
    await putManifest(t, 'repo', m, subject.manifest.digest);
    const get = t.store.get.bind(t.store);
    const reads: string[] = [];
    t.store.get = (key, range) => (reads.push(key), get(key, range));
    const { body } = await referrers(t, 'repo', subject.manifest.digest);
    expect(body.manifests[0]!.annotations![ANNOTATION]).toMatch(/^1:x{100}$/);
    expect(reads).toEqual([]);
  });

  it('a filter that matches few of many entries answers a short page and a Link, not the whole partition', async () => {
    const t = guardedApp();
    const subject = image().manifest.digest;
    // Entries written straight into the index: 12,000 referrers of one type, then one of another.
    const entry = (i: number, type: string) => ({ mediaType: OCI_MANIFEST, digest: sha256(`r${i}`), size: 10, artifactType: type });
    for (let i = 0; i < 12_000; i++) await t.index.put({ pk: `referrer#repo#${subject}`, sk: entry(i, TYPE_A).digest }, entry(i, TYPE_A));
    const rare = entry(-1, TYPE_B);
    await t.index.put({ pk: `referrer#repo#${subject}`, sk: rare.digest }, rare);

    const first = await referrers(t, 'repo', subject, `?artifactType=${TYPE_B}`);
    expect(first.res.headers.get('link')).toMatch(/rel="next"/);
    const { manifests } = await allPages(t, 'repo', subject, `?artifactType=${TYPE_B}`);
    expect(manifests).toEqual([rare]);
  });
});
