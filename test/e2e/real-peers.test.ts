import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Blob } from '../support/images.js';
import { startContainerd, UNREACHABLE_SERVER, writeHostsToml, type Containerd } from './support/containerd.js';
import { expectSameBlobs, imageBlobs, indexBlobs, readLayout, tarImage, tarIndex } from './support/oci-layout.js';
import { skopeo } from './support/skopeo.js';
import { seedImage, startUpstreamRegistry, type RegistryRequest, type UpstreamRegistry } from './support/upstream-registry.js';

/**
 * The real peers of the mirror tests, on their own (no Outpost): Distribution 2.8 as an
 * upstream with htpasswd auth, Distribution's proxy mode in front of it read by skopeo, and
 * containerd pulling through a hosts.toml entry. What these tests pin down (the JSON request
 * log, containerd's `?ns=` query) is what the mirror tests rely on.
 */

const KiB = 1024;
// containerd unpacks only the host's platform.
const ARCH = process.arch === 'arm64' ? 'arm64' : 'amd64';
const OTHER_ARCH = ARCH === 'amd64' ? 'arm64' : 'amd64';

// A base image, an app built on it, and a two-platform index whose images share the base too.
const base = tarImage({ layers: [64 * KiB, 2 * KiB], arch: ARCH });
const app = tarImage({ layers: [16 * KiB, 100], arch: ARCH, base });
const multi = tarIndex([
  { arch: ARCH, layers: [4 * KiB], base },
  { arch: OTHER_ARCH, layers: [8 * KiB], base },
]);
const [hostImage, otherImage] = multi.images as [(typeof multi.images)[0], (typeof multi.images)[0]];
// Characters a careless Basic or YAML encoding would break.
const credentials = { username: 'outpost', password: `${randomBytes(9).toString('base64url')}:"# x` };

const blobGets = (requests: RegistryRequest[], digest: string) =>
  requests.filter((r) => r.method === 'GET' && r.kind === 'blob' && r.digest === digest);

let work: string;
let up: UpstreamRegistry;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'outpost-e2e-peers-'));
  up = await startUpstreamRegistry({ auth: credentials });
  await seedImage(up, 'team/app', 'base', base);
  await seedImage(up, 'team/app', 'v1', app);
  await seedImage(up, 'team/app', 'multi', multi);
});

afterAll(async () => {
  await up?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

describe('docker-registry with htpasswd auth as the upstream', () => {
  it('asks for Basic credentials and refuses wrong ones', async () => {
    const anonymous = await fetch(`${up.url}/v2/team/app/manifests/v1`);
    await anonymous.arrayBuffer();
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers.get('www-authenticate')).toBe('Basic realm="outpost-test"');

    const wrong = await up.fetch('/v2/', { headers: { authorization: `Basic ${Buffer.from('outpost:nope').toString('base64')}` } });
    await wrong.arrayBuffer();
    expect(wrong.status).toBe(401);

    const right = await up.fetch('/v2/');
    await right.arrayBuffer();
    expect(right.status).toBe(200);

    // A refused request has no response line in Distribution's log, but requests() still lists it.
    const refused = (await up.requests()).filter((r) => r.status === 401);
    expect(refused.map((r) => `${r.method} ${r.path}`)).toEqual(['GET /v2/team/app/manifests/v1', 'GET /v2/']);
  });

  it('serves every seeded manifest and blob byte for byte', async () => {
    const tags: Array<[string, Blob]> = [
      ['base', base.manifest],
      ['v1', app.manifest],
      ['multi', multi.index],
      [hostImage.manifest.digest, hostImage.manifest],
      [otherImage.manifest.digest, otherImage.manifest],
    ];
    for (const [reference, manifest] of tags) {
      const res = await up.fetch(`/v2/team/app/manifests/${reference}`, { headers: { accept: manifest.mediaType } });
      expect(res.status, reference).toBe(200);
      expect(res.headers.get('docker-content-digest')).toBe(manifest.digest);
      expect(res.headers.get('content-type')).toBe(manifest.mediaType);
      expect(Buffer.from(await res.arrayBuffer()).equals(manifest.bytes), reference).toBe(true);
    }
    const blobs = [...imageBlobs(app), ...indexBlobs(multi)].filter((b) => !tags.some(([, m]) => m.digest === b.digest));
    for (const b of blobs) {
      const res = await up.fetch(`/v2/team/app/blobs/${b.digest}`);
      expect(res.status, b.digest).toBe(200);
      expect(Buffer.from(await res.arrayBuffer()).equals(b.bytes), b.digest).toBe(true);
    }
  });

  it('logs each request with its status and bytes: the shared layers were uploaded once', async () => {
    const before = await up.requests();
    const uploads = before.filter((r) => r.method === 'PUT' && r.kind === 'upload');
    // One upload per distinct blob: base, app and both platform images share the base layers.
    const distinct = new Set([base, app, ...multi.images].flatMap((img) => [img.config, ...img.layers]).map((b) => b.digest));
    expect(uploads.map((r) => r.query.digest).sort()).toEqual([...distinct].sort());
    expect(uploads.every((r) => r.status === 201)).toBe(true);

    const shared = base.layers[0]!;
    for (let i = 0; i < 3; i++) await (await up.fetch(`/v2/team/app/blobs/${shared.digest}`)).arrayBuffer();
    await (await up.fetch(`/v2/team/app/blobs/${shared.digest}`, { method: 'HEAD' })).arrayBuffer();
    const after = await up.requests();

    const gets = blobGets(after, shared.digest).slice(blobGets(before, shared.digest).length);
    expect(gets).toHaveLength(3);
    for (const r of gets) {
      expect(r).toMatchObject({ status: 200, bytes: shared.size, repository: 'team/app', path: `/v2/team/app/blobs/${shared.digest}` });
    }
    expect(after.at(-1)).toMatchObject({ method: 'HEAD', kind: 'blob', digest: shared.digest, status: 200 });
  });
});

describe('docker-registry in proxy mode in front of the upstream', () => {
  let proxy: UpstreamRegistry;

  beforeAll(async () => {
    proxy = await startUpstreamRegistry({ proxy: { remoteUrl: up.url, ...credentials } });
  });

  afterAll(async () => {
    await proxy?.stop();
  });

  it('lets skopeo pull an image through it, byte-identical, fetching from the upstream with the credentials', async () => {
    const target = join(work, 'through-proxy');
    await skopeo('copy', '--quiet', '--src-tls-verify=false', '--preserve-digests', `docker://${proxy.host}/team/app:v1`, `oci:${target}:v1`);

    const pulled = await readLayout(target);
    expect(pulled.ref('v1')).toEqual({ mediaType: app.manifest.mediaType, digest: app.manifest.digest, size: app.manifest.size });
    expectSameBlobs(pulled.blobs, imageBlobs(app));

    const fromProxy = async () => (await up.requests()).filter((r) => r.userAgent?.startsWith('Go-http-client'));
    expect((await fromProxy()).filter((r) => r.status === 401)).toEqual([]);
    // 2.8's proxy fetches a blob it does not have twice: one stream to serve the client, one in the
    // background to store it (registry/proxy/proxyblobstore.go). The second may still be running.
    for (const b of [app.config, ...app.layers]) {
      await expect.poll(async () => blobGets(await fromProxy(), b.digest).map((r) => r.status), { message: b.digest }).toEqual([200, 200]);
    }
    // And the proxy's own log shows skopeo's side.
    const seen = (await proxy.requests()).filter((r) => r.userAgent?.startsWith('skopeo'));
    expect(seen.some((r) => r.kind === 'manifest' && r.reference === 'v1' && r.status === 200)).toBe(true);
  });
});

describe('containerd pulling through a hosts.toml entry', () => {
  let plain: UpstreamRegistry;
  let ctd: Containerd;
  let hostsDir: string;

  beforeAll(async () => {
    [plain, ctd] = await Promise.all([startUpstreamRegistry(), startContainerd()]);
    await seedImage(plain, 'library/app', 'v1', app);
    await seedImage(plain, 'library/multi', 'v1', multi);
    hostsDir = join(work, 'hosts');
    // A server that refuses at once: a failed pull must not go on to Docker Hub.
    await writeHostsToml(hostsDir, 'docker.io', plain.url, { server: UNREACHABLE_SERVER });
    await writeHostsToml(hostsDir, 'registry.example', up.url, { server: UNREACHABLE_SERVER });
  });

  afterAll(async () => {
    await Promise.all([ctd?.stop(), plain?.stop()]);
  });

  it('pulls docker.io/library/app:v1 from the plain-HTTP host, sending ?ns=docker.io on every request', async () => {
    const result = await ctd.pull('docker.io/library/app:v1', { hostsDir });
    expect(result.code, result.stderr).toBe(0);

    expect(await ctd.images()).toContainEqual({ ref: 'docker.io/library/app:v1', mediaType: app.manifest.mediaType, digest: app.manifest.digest });
    const stored = new Map((await ctd.content()).map((c) => [c.digest, c]));
    for (const b of imageBlobs(app)) {
      expect(stored.get(b.digest)?.labels['containerd.io/distribution.source.docker.io'], b.digest).toBe('library/app');
      expect((await ctd.readBlob(b.digest)).equals(b.bytes), b.digest).toBe(true);
    }

    const sent = (await plain.requests())
      .filter((r) => r.userAgent?.startsWith('containerd/'))
      .map((r) => `${r.method} ${r.path}?${new URLSearchParams(r.query)} ${r.status}`);
    // Resolve: HEAD the tag; then the manifest by digest, then each blob once (in any order).
    expect(sent.slice(0, 2)).toEqual([
      'HEAD /v2/library/app/manifests/v1?ns=docker.io 200',
      `GET /v2/library/app/manifests/${app.manifest.digest}?ns=docker.io 200`,
    ]);
    expect(sent.slice(2).sort()).toEqual([app.config, ...app.layers].map((b) => `GET /v2/library/app/blobs/${b.digest}?ns=docker.io 200`).sort());
  });

  it("pulls its platform's image of an index, fetching only the blobs it does not have yet", async () => {
    const result = await ctd.pull('docker.io/library/multi:v1', { hostsDir });
    expect(result.code, result.stderr).toBe(0);
    expect(await ctd.images()).toContainEqual({ ref: 'docker.io/library/multi:v1', mediaType: multi.index.mediaType, digest: multi.index.digest });

    const sent = (await plain.requests()).filter((r) => r.userAgent?.startsWith('containerd/') && r.repository === 'library/multi');
    expect(sent.every((r) => r.query.ns === 'docker.io' && r.status === 200)).toBe(true);
    const fetched = sent.filter((r) => r.method === 'GET').map((r) => r.digest);
    // The base layers came with library/app: containerd's content store has them by digest.
    const own = hostImage.layers.at(-1)!;
    expect(fetched.sort()).toEqual([multi.index.digest, hostImage.manifest.digest, hostImage.config.digest, own.digest].sort());
    for (const b of otherImage.layers.slice(base.layers.length)) expect(fetched).not.toContain(b.digest);
  });

  it('answers a 401 challenge with the --user credentials', async () => {
    const result = await ctd.pull('registry.example/team/app:base', { hostsDir, user: `${credentials.username}:${credentials.password}` });
    expect(result.code, result.stderr).toBe(0);
    expect(await ctd.images()).toContainEqual({ ref: 'registry.example/team/app:base', mediaType: base.manifest.mediaType, digest: base.manifest.digest });

    const sent = (await up.requests()).filter((r) => r.userAgent?.startsWith('containerd/'));
    expect(sent.every((r) => r.query.ns === 'registry.example')).toBe(true);
    // The first request goes without credentials, the retry after the challenge with them.
    expect(sent.slice(0, 2).map((r) => `${r.method} ${r.path} ${r.status}`)).toEqual([
      'HEAD /v2/team/app/manifests/base 401',
      'HEAD /v2/team/app/manifests/base 200',
    ]);
  });
});
