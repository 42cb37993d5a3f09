import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { OutpostProcess } from '../support/server.js';
import type { Target } from '../support/targets.js';

/**
 * The request sequence of the OCI distribution-spec conformance suite (v1.1.x: pull, push,
 * content discovery, content management, in its order and with its assertions), replayed
 * over real HTTP against a running Outpost: `conformanceFlow(target)` registers the whole flow
 * for one way of running it (test/e2e/support/targets.ts), on an empty store of its own. Bodies
 * are sent the way the suite's Go client sends them: chunked, without Content-Length. The suite
 * itself is Go and cannot be fetched here; this keeps its expectations executable.
 */

const N = 'conformance/myorg/myrepo';
const X = `conformance-${randomBytes(4).toString('hex')}`;
const IMAGE = 'application/vnd.oci.image.manifest.v1+json';
const INDEX = 'application/vnd.oci.image.index.v1+json';
const ANNOTATION = 'org.opencontainers.conformance.test';

const sha = (b: Uint8Array | string) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
/** Go's json.MarshalIndent(v, "", "\t"): tab-indented, as the suite writes its documents. */
const indent = (v: unknown) => Buffer.from(JSON.stringify(v, null, '\t'));

function config(): Buffer {
  const author = randomBytes(12).toString('base64url').slice(0, 16);
  return indent({ author, architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } });
}
const layer = Buffer.from(randomBytes(168));
const configs = [config(), config(), config(), config(), config()];
function manifest(cfg: Buffer, extra: Record<string, unknown> = {}): Buffer {
  return indent({
    schemaVersion: 2,
    mediaType: IMAGE,
    config: {
      mediaType: 'application/vnd.oci.image.config.v1+json',
      digest: sha(cfg),
      size: cfg.byteLength,
      data: cfg.toString('base64'),
      newUnspecifiedField: 'aGVsbG8gd29ybGQ=',
    },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha(layer), size: layer.byteLength, newUnspecifiedField: null }],
    ...extra,
  });
}
const manifests = configs.map((c) => manifest(c));
const dummyDigest = sha('hello world');
const emptyJSON = Buffer.from('{}');
const refBlobA = Buffer.from('NHL Peanut Butter on my NHL bagel');
const refBlobB = Buffer.from('NBA Strawberry Jam on my NBA croissant');
const typeA = 'application/vnd.nhl.peanut.butter.bagel';
const typeB = 'application/vnd.nba.strawberry.jam.croissant';
const desc = (mediaType: string, b: Buffer) => ({ mediaType, digest: sha(b), size: b.byteLength, newUnspecifiedField: null });
const subject4 = desc(IMAGE, manifests[4]!);
const emptyDesc = desc('application/vnd.oci.empty.v1+json', emptyJSON);
const refs = {
  aConfig: indent({ schemaVersion: 2, mediaType: IMAGE, config: desc(typeA, refBlobA), layers: [emptyDesc], subject: subject4, annotations: { [ANNOTATION]: 'test config a' } }),
  bConfig: indent({ schemaVersion: 2, mediaType: IMAGE, config: desc(typeB, refBlobB), layers: [emptyDesc], subject: subject4, annotations: { [ANNOTATION]: 'test config b' } }),
  aLayer: indent({ schemaVersion: 2, mediaType: IMAGE, artifactType: typeA, config: emptyDesc, layers: [desc(typeA, refBlobA)], subject: subject4, annotations: { [ANNOTATION]: 'test layer a' } }),
  bLayer: indent({ schemaVersion: 2, mediaType: IMAGE, artifactType: typeB, config: emptyDesc, layers: [desc(typeB, refBlobB)], subject: subject4, annotations: { [ANNOTATION]: 'test layer b' } }),
  cLayer: indent({ schemaVersion: 2, mediaType: IMAGE, artifactType: typeB, config: emptyDesc, layers: [desc(typeB, refBlobB)], subject: desc(IMAGE, manifests[3]!) }),
};
const refsIndex = indent({
  schemaVersion: 2,
  mediaType: INDEX,
  artifactType: 'application/vnd.food.stand',
  manifests: [desc(IMAGE, refs.aConfig), desc(IMAGE, refs.aLayer)],
  subject: subject4,
  annotations: { [ANNOTATION]: 'test index' },
});

/** A chunked request body, as Go's net/http sends an io.Reader of unknown length. */
function chunked(bytes: Uint8Array): { body: ReadableStream<Uint8Array>; duplex: 'half' } {
  return {
    body: new ReadableStream({
      start(c) {
        if (bytes.byteLength) c.enqueue(new Uint8Array(bytes));
        c.close();
      },
    }),
    duplex: 'half',
  };
}

export function conformanceFlow(target: Target): void {
  describe(`conformance flow on ${target.name}`, () => {
    let server: OutpostProcess;
    let work: string;

    /** As the suite's client sends OCI_USERNAME and OCI_PASSWORD: Basic on every request. */
    const credentials: Record<string, string> = target.authorization ? { Authorization: target.authorization } : {};

    async function req(method: string, path: string, init: { body?: Uint8Array; headers?: Record<string, string> } = {}) {
      const url = path.startsWith('http') ? path : `${server.url}${path}`;
      const res = await fetch(url, {
        method,
        headers: { 'User-Agent': 'distribution-spec-conformance-tests', ...credentials, ...init.headers },
        ...(init.body ? chunked(init.body) : {}),
      } as RequestInit);
      const text = method === 'HEAD' ? '' : await res.text();
      return { status: res.status, headers: res.headers, text, json: () => JSON.parse(text) };
    }

    /** reggie's GetRelativeLocation: the path (and query) of Location. */
    function loc(res: { headers: Headers }): string {
      const raw = res.headers.get('location');
      expect(raw, 'Location header').toBeTruthy();
      const u = new URL(raw!, server.url);
      return u.pathname + u.search;
    }

    const withDigest = (location: string, digest: string) => `${location}${location.includes('?') ? '&' : '?'}digest=${encodeURIComponent(digest)}`;

    async function uploadSetupStyle(name: string, blob: Buffer): Promise<void> {
      const post = await req('POST', `/v2/${name}/blobs/uploads/`);
      const put = await req('PUT', withDigest(loc(post), sha(blob)), { body: blob, headers: { 'Content-Type': 'application/octet-stream' } });
      expect(put.status, put.text).toBeGreaterThanOrEqual(200);
      expect(put.status).toBeLessThan(300);
    }

    async function putManifest(ref: string, body: Buffer, contentType = IMAGE) {
      return req('PUT', `/v2/${N}/manifests/${ref}`, { body, headers: { 'Content-Type': contentType } });
    }

    const is2xx = (s: number) => s >= 200 && s < 300;
    const ok = (allowed: number[]) => (s: number) => is2xx(s) || allowed.includes(s);

    beforeAll(async () => {
      work = mkdtempSync(join(tmpdir(), 'outpost-conformance-'));
      server = await target.start(work, 'conformance');
    });

    afterAll(async () => {
      await server?.stop();
      if (work) rmSync(work, { recursive: true, force: true });
    });

    describe.sequential('conformance: pull', () => {
      it('setup', async () => {
        for (const b of [configs[0]!, configs[1]!, layer]) await uploadSetupStyle(N, b);
        expect((await putManifest('tagtest0', manifests[0]!)).status).toBe(201);
        expect((await putManifest(sha(manifests[1]!), manifests[1]!)).status).toBe(201);
      });

      it('pulls blobs', async () => {
        expect((await req('HEAD', `/v2/${N}/blobs/${dummyDigest}`)).status).toBe(404);
        const head = await req('HEAD', `/v2/${N}/blobs/${sha(configs[0]!)}`);
        expect(head.status).toBe(200);
        expect(head.headers.get('docker-content-digest')).toBe(sha(configs[0]!));
        expect(head.headers.get('content-length')).toBe(String(configs[0]!.byteLength));
        expect((await req('GET', `/v2/${N}/blobs/${dummyDigest}`)).status).toBe(404);
        const get = await req('GET', `/v2/${N}/blobs/${sha(configs[0]!)}`);
        expect(get.status).toBe(200);
        expect(get.text).toBe(configs[0]!.toString());
      });

      it('pulls manifests', async () => {
        const accept = { Accept: IMAGE };
        expect((await req('HEAD', `/v2/${N}/manifests/.INVALID_MANIFEST_NAME`)).status).toBe(404);
        for (const [ref, digest] of [
          [sha(manifests[0]!), sha(manifests[0]!)],
          [sha(manifests[1]!), sha(manifests[1]!)],
          ['tagtest0', sha(manifests[0]!)],
        ] as const) {
          const head = await req('HEAD', `/v2/${N}/manifests/${ref}`, { headers: accept });
          expect(head.status).toBe(200);
          expect(head.headers.get('docker-content-digest')).toBe(digest);
          expect(head.headers.get('content-type')).toBe(IMAGE);
          const get = await req('GET', `/v2/${N}/manifests/${ref}`, { headers: accept });
          expect(get.status).toBe(200);
          expect(sha(get.text)).toBe(digest);
        }
        expect((await req('GET', `/v2/${N}/manifests/.INVALID_MANIFEST_NAME`)).status).toBe(404);
      });

      it('answers a malformed digest with a listed error code', async () => {
        const res = await req('GET', `/v2/${N}/manifests/sha256:totallywrong`, { headers: { 'Content-Type': IMAGE } });
        expect(res.status).toBe(400);
        expect(res.json().errors[0].code).toBe('DIGEST_INVALID');
      });

      it('teardown', async () => {
        for (const m of [manifests[0]!, manifests[1]!]) expect(ok([405])((await req('DELETE', `/v2/${N}/manifests/${sha(m)}`)).status)).toBe(true);
        for (const b of [configs[0]!, configs[1]!, layer]) expect(ok([404, 405])((await req('DELETE', `/v2/${N}/blobs/${sha(b)}`)).status)).toBe(true);
      });
    });

    describe.sequential('conformance: push', () => {
      const blobA = randomBytes(42);
      const blobB = randomBytes(42);

      it('streamed upload', async () => {
        const post = await req('POST', `/v2/${N}/blobs/uploads/`);
        const patch = await req('PATCH', loc(post), { body: blobA, headers: { 'Content-Type': 'application/octet-stream' } });
        expect(patch.status, patch.text).toBe(202);
        const put = await req('PUT', withDigest(loc(patch), sha(blobA)), { headers: { 'Content-Type': 'application/octet-stream' } });
        expect(put.status, put.text).toBe(201);
        expect(put.headers.get('location')).toBeTruthy();
      });

      it('monolithic upload', async () => {
        expect((await req('GET', `/v2/${N}/blobs/${dummyDigest}`)).status).toBe(404);
        const post = await req('POST', `/v2/${N}/blobs/uploads/?digest=${sha(configs[1]!)}`, {
          body: configs[1]!,
          headers: { 'Content-Type': 'application/octet-stream' },
        });
        expect(post.status).toBe(201);
        expect(loc(post)).toBe(`/v2/${N}/blobs/${sha(configs[1]!)}`);
        expect((await req('GET', `/v2/${N}/blobs/${sha(configs[1]!)}`)).status).toBe(200);
        const open = await req('POST', `/v2/${N}/blobs/uploads/`);
        expect(open.status).toBe(202);
        const put = await req('PUT', withDigest(loc(open), sha(configs[1]!)), { body: configs[1]!, headers: { 'Content-Type': 'application/octet-stream' } });
        expect(put.status).toBe(201);
        expect((await req('GET', `/v2/${N}/blobs/${sha(configs[1]!)}`)).status).toBe(200);
        const open2 = await req('POST', `/v2/${N}/blobs/uploads/`);
        const put2 = await req('PUT', withDigest(loc(open2), sha(layer)), { body: layer, headers: { 'Content-Type': 'application/octet-stream' } });
        expect(put2.status).toBe(201);
        expect((await req('GET', `/v2/${N}/blobs/${sha(layer)}`)).status).toBe(200);
      });

      it('chunked upload, out of order chunk refused', async () => {
        const post = await req('POST', `/v2/${N}/blobs/uploads/`, { headers: { 'Content-Length': '0' } });
        expect(post.headers.get('oci-chunk-min-length')).toBeNull();
        const patch = await req('PATCH', loc(post), {
          body: blobB.subarray(22),
          headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': '22-41' },
        });
        expect(patch.status).toBe(416);
      });

      it('chunked upload in order, with a retried chunk, status and completion', async () => {
        const post = await req('POST', `/v2/${N}/blobs/uploads/`, { headers: { 'Content-Length': '0' } });
        const first = await req('PATCH', loc(post), { body: blobB.subarray(0, 22), headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': '0-21' } });
        expect(first.status).toBe(202);
        expect(first.headers.get('range')).toBe('0-21');
        const retry = await req('PATCH', loc(post), { body: blobB.subarray(0, 22), headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': '0-21' } });
        expect(retry.status).toBe(416);
        const status = await req('GET', loc(post));
        expect(status.status).toBe(204);
        expect(status.headers.get('range')).toBe('0-21');
        const second = await req('PATCH', loc(status), { body: blobB.subarray(22), headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': '22-41' } });
        expect(second.status).toBe(202);
        expect(second.headers.get('range')).toBe('0-41');
        const put = await req('PUT', withDigest(loc(second), sha(blobB)), { headers: { 'Content-Length': '0', 'Content-Type': 'application/octet-stream' } });
        expect(put.status, put.text).toBe(201);
        const get = await fetch(`${server.url}/v2/${N}/blobs/${sha(blobB)}`, { headers: credentials });
        expect(Buffer.from(await get.arrayBuffer()).equals(blobB)).toBe(true);
      });

      it('cross-repository mount', async () => {
        const noFrom = await req('POST', `/v2/${X}/blobs/uploads/?mount=${dummyDigest}`);
        expect(noFrom.status).toBe(202);
        expect(noFrom.headers.get('location')).toBeTruthy();
        const mount = await req('POST', `/v2/${X}/blobs/uploads/?mount=${sha(blobA)}&from=${encodeURIComponent(N)}`);
        expect(mount.status).toBe(201);
        expect(loc(mount)).toBe(`/v2/${X}/blobs/${sha(blobA)}`);
        expect((await req('GET', loc(mount))).status).toBe(200);
        // OCI_AUTOMATIC_CROSSMOUNT=false: without `from`, an upload session even though X has the blob.
        expect((await req('POST', `/v2/${X}/blobs/uploads/?mount=${sha(blobA)}`)).status).toBe(202);
      });

      it('manifest upload', async () => {
        expect((await req('GET', `/v2/${N}/manifests/.INVALID_MANIFEST_NAME`)).status).toBe(404);
        for (const tag of ['test0', 'test1', 'test2', 'test3']) {
          const put = await putManifest(tag, manifests[1]!);
          expect(put.status, put.text).toBe(201);
          expect(put.headers.get('location')).toBeTruthy();
        }
        const emptyLayer = indent({ schemaVersion: 2, config: JSON.parse(manifests[1]!.toString()).config, layers: [] });
        const put = await putManifest('emptylayer', emptyLayer);
        expect(put.status, put.text).toBe(201);
        expect((await req('GET', `/v2/${N}/manifests/${sha(manifests[1]!)}`, { headers: { Accept: IMAGE } })).status).toBe(200);
        expect(ok([405])((await req('DELETE', `/v2/${N}/manifests/${sha(manifests[1]!)}`)).status)).toBe(true);
        expect(ok([405])((await req('DELETE', `/v2/${N}/manifests/${sha(emptyLayer)}`)).status)).toBe(true);
        for (const b of [configs[1]!, layer]) expect(ok([404, 405])((await req('DELETE', `/v2/${N}/blobs/${sha(b)}`)).status)).toBe(true);
      });
    });

    describe.sequential('conformance: content discovery', () => {
      let numTags = 4;

      it('setup', async () => {
        await uploadSetupStyle(N, configs[2]!);
        await uploadSetupStyle(N, layer);
        for (const tag of ['test0', 'test1', 'test2', 'test3']) expect((await putManifest(tag, manifests[2]!)).status).toBe(201);
        expect(sha(emptyJSON)).toBe('sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a');
        await uploadSetupStyle(N, emptyJSON);
        await uploadSetupStyle(N, refBlobA);
        const subjectOf = async (body: Buffer, contentType = IMAGE) => {
          const put = await putManifest(sha(body), body, contentType);
          expect(put.status, put.text).toBe(201);
          return put.headers.get('oci-subject');
        };
        expect(await subjectOf(refs.aConfig)).toBe(sha(manifests[4]!));
        expect(await subjectOf(refs.aLayer)).toBe(sha(manifests[4]!));
        expect(await subjectOf(refsIndex, INDEX)).toBe(sha(manifests[4]!));
        await uploadSetupStyle(N, configs[4]!);
        await uploadSetupStyle(N, layer);
        expect((await putManifest('tagtest0', manifests[4]!)).status).toBe(201);
        await uploadSetupStyle(N, refBlobB);
        expect(await subjectOf(refs.bConfig)).toBe(sha(manifests[4]!));
        expect(await subjectOf(refs.bLayer)).toBe(sha(manifests[4]!));
        expect(await subjectOf(refs.cLayer)).toBe(sha(manifests[3]!));
      });

      it('lists tags with n and last', async () => {
        const all = await req('GET', `/v2/${N}/tags/list`);
        expect(all.status).toBe(200);
        const tags: string[] = all.json().tags;
        expect(tags).toEqual([...tags].sort());
        numTags = tags.length;
        expect(numTags).toBeGreaterThanOrEqual(5);
        const k = Math.floor(numTags / 2);
        const half = await req('GET', `/v2/${N}/tags/list?n=${k}`);
        expect(half.status).toBe(200);
        expect(half.json().tags).toHaveLength(k);
        const last = half.json().tags[k - 1];
        const next = await req('GET', `/v2/${N}/tags/list?n=${k}&last=${last}`);
        expect(next.status).toBe(200);
        expect(next.json().tags.length).toBeLessThanOrEqual(k);
        expect(next.json().tags).not.toContain(last);
        expect(next.json().tags[0] > last).toBe(true);
      });

      it('lists referrers', async () => {
        const none = await req('GET', `/v2/${N}/referrers/${dummyDigest}`);
        expect(none.status).toBe(200);
        expect(none.headers.get('content-type')).toBe(INDEX);
        expect(none.json().manifests).toEqual([]);

        const all = await req('GET', `/v2/${N}/referrers/${sha(manifests[4]!)}`);
        expect(all.status).toBe(200);
        expect(all.headers.get('content-type')).toBe(INDEX);
        const found: Array<{ digest: string; annotations: Record<string, string>; artifactType: string; mediaType: string }> = all.json().manifests;
        expect(found).toHaveLength(5);
        const expected = new Map([
          [sha(refs.aConfig), 'test config a'],
          [sha(refs.aLayer), 'test layer a'],
          [sha(refs.bConfig), 'test config b'],
          [sha(refs.bLayer), 'test layer b'],
          [sha(refsIndex), 'test index'],
        ]);
        for (const d of found) expect(d.annotations).toEqual({ [ANNOTATION]: expected.get(d.digest) });
        expect(found.find((d) => d.digest === sha(refsIndex))?.mediaType).toBe(INDEX);

        const filtered = await req('GET', `/v2/${N}/referrers/${sha(manifests[4]!)}?artifactType=${encodeURIComponent(typeA)}`);
        expect(filtered.status).toBe(200);
        expect(filtered.headers.get('content-type')).toBe(INDEX);
        expect(filtered.headers.get('oci-filters-applied')).toBe('artifactType');
        expect(filtered.json().manifests.map((d: { digest: string }) => d.digest).sort()).toEqual([sha(refs.aConfig), sha(refs.aLayer)].sort());

        const c = await req('GET', `/v2/${N}/referrers/${sha(manifests[3]!)}`);
        expect(c.json().manifests.map((d: { digest: string }) => d.digest)).toEqual([sha(refs.cLayer)]);
      });

      it('teardown (both suite variants)', async () => {
        const byDigest = [refsIndex, manifests[2]!, manifests[4]!, refs.aConfig, refs.aLayer];
        for (const m of byDigest) expect(ok([404, 405])((await req('DELETE', `/v2/${N}/manifests/${sha(m)}`)).status)).toBe(true);
        // The pre-#525 variant also deletes by tag here and refuses 400.
        expect(ok([404, 405])((await req('DELETE', `/v2/${N}/manifests/tagtest0`)).status)).toBe(true);
        for (const m of [refs.bConfig, refs.bLayer, refs.cLayer]) expect(ok([404, 405])((await req('DELETE', `/v2/${N}/manifests/${sha(m)}`)).status)).toBe(true);
        // The pre-#541 variant refuses 404 on these two.
        for (const b of [configs[2]!, layer]) expect(ok([405])((await req('DELETE', `/v2/${N}/blobs/${sha(b)}`)).status)).toBe(true);
        for (const b of [configs[4]!, refBlobA, refBlobB, emptyJSON]) expect(ok([404, 405])((await req('DELETE', `/v2/${N}/blobs/${sha(b)}`)).status)).toBe(true);
      });
    });

    describe.sequential('conformance: content management', () => {
      let numTags = 0;

      it('setup', async () => {
        await uploadSetupStyle(N, configs[3]!);
        await uploadSetupStyle(N, layer);
        expect((await putManifest('tagtest0', manifests[3]!)).status).toBe(201);
        const tags = await req('GET', `/v2/${N}/tags/list`);
        expect(tags.status).toBe(200);
        numTags = tags.json().tags.length;
        expect(numTags).toBeGreaterThanOrEqual(1);
      });

      it('deletes manifests by tag and by digest', async () => {
        expect((await req('DELETE', `/v2/${N}/manifests/tagtest0`)).status).toBe(202);
        expect((await req('DELETE', `/v2/${N}/manifests/${sha(manifests[3]!)}`)).status).toBe(202);
        expect((await req('GET', `/v2/${N}/manifests/${sha(manifests[3]!)}`)).status).toBe(404);
        const tags = await req('GET', `/v2/${N}/tags/list`);
        expect(tags.status).toBe(200);
        expect(tags.json().tags.length).toBeLessThan(numTags);
      });

      it('deletes blobs', async () => {
        expect((await req('DELETE', `/v2/${N}/blobs/${sha(configs[3]!)}`)).status).toBe(202);
        expect((await req('DELETE', `/v2/${N}/blobs/${sha(layer)}`)).status).toBe(202);
        expect((await req('GET', `/v2/${N}/blobs/${sha(configs[3]!)}`)).status).toBe(404);
      });
    });
  });
}
