import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MediaType } from '../../src/core/oci/media-types.js';
import { cosignPayload, generateSigner, signatureLayer, type TestSigner } from '../support/cosign-sign.js';
import { blob, type Blob } from '../support/images.js';
import { startContainerd, UNREACHABLE_SERVER, writeHostsToml, type Containerd } from './support/containerd.js';
import { readLayout, tarImage, tarIndex } from './support/oci-layout.js';
import { startOutpost, type OutpostProcess } from './support/server.js';
import { skopeo } from './support/skopeo.js';
import { seedBlob, seedImage, startUpstreamRegistry, type UpstreamRegistry } from './support/upstream-registry.js';

/**
 * The signature gate with real clients: Debian's docker-registry as the upstream holding images
 * and cosign signatures in cosign's tag format (made here with a generated key), Outpost
 * mirroring it under a policy on docker.io/library/*, and skopeo and containerd pulling through
 * it: a signed image pulls, an unsigned one is refused with DENIED, and a multi-platform index
 * signed at the top pulls whole.
 */

const ARCH = process.arch === 'arm64' ? 'arm64' : 'amd64';
const OTHER_ARCH = ARCH === 'amd64' ? 'arm64' : 'amd64';
const signed = tarImage({ layers: [256 * 1024], arch: ARCH });
const unsigned = tarImage({ layers: [200 * 1024], arch: ARCH });
const multi = tarIndex([
  { arch: ARCH, layers: [128 * 1024] },
  { arch: OTHER_ARCH, layers: [96 * 1024] },
]);

let work: string;
let up: UpstreamRegistry;
let outpost: OutpostProcess;
let signer: TestSigner;

/** Pushes cosign's signature of `digest` to the upstream: payload and config blobs, then the manifest at sha256-<hex>.sig. */
async function sign(repository: string, digest: string): Promise<void> {
  const payload = cosignPayload(digest, `docker.io/${repository}`);
  const layer = await signatureLayer(payload, await signer.sign(payload));
  const config = blob('{}', 'application/vnd.oci.image.config.v1+json');
  await seedBlob(up, repository, config);
  await seedBlob(up, repository, blob(Buffer.from(payload), layer.mediaType));
  const manifest: Blob = blob(
    JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config: { mediaType: config.mediaType, digest: config.digest, size: config.size }, layers: [layer] }),
    MediaType.OciManifest,
  );
  const res = await up.fetch(`/v2/${repository}/manifests/sha256-${digest.slice(7)}.sig`, {
    method: 'PUT',
    body: new Uint8Array(manifest.bytes),
    headers: { 'content-type': manifest.mediaType },
  });
  expect(res.status, await res.text()).toBe(201);
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'outpost-e2e-gate-'));
  signer = await generateSigner('ecdsa-p256');
  up = await startUpstreamRegistry();
  await sign('library/signed', await seedImage(up, 'library/signed', 'v1', signed));
  await seedImage(up, 'library/unsigned', 'v1', unsigned);
  await sign('library/multi', await seedImage(up, 'library/multi', 'v1', multi));
  const config = {
    upstreams: [{ name: 'hub', url: up.url, namespace: 'docker.io', default: true }],
    policies: [{ name: 'library-signed', repositories: ['docker.io/library/*'], keys: [{ pem: signer.pem }], requireTransparencyLog: false }],
  };
  outpost = await startOutpost(join(work, 'data'), { OUTPOST_CONFIG: JSON.stringify(config) });
}, 120_000);

afterAll(async () => {
  await outpost?.stop();
  await up?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

describe('the signature gate with skopeo and containerd', () => {
  it('skopeo pulls a signed image and a multi-platform index signed at the top, and is refused an unsigned one', async () => {
    await skopeo('copy', '--quiet', '--src-tls-verify=false', `docker://${outpost.host}/hub/library/signed:v1`, `oci:${join(work, 'signed')}:v1`);
    expect((await readLayout(join(work, 'signed'))).ref('v1').digest).toBe(signed.manifest.digest);
    await skopeo('copy', '--quiet', '--all', '--src-tls-verify=false', `docker://${outpost.host}/hub/library/multi:v1`, `oci:${join(work, 'multi')}:v1`);
    expect((await readLayout(join(work, 'multi'))).ref('v1').digest).toBe(multi.index.digest);
    const refused = await skopeo('copy', '--quiet', '--src-tls-verify=false', `docker://${outpost.host}/hub/library/unsigned:v1`, `oci:${join(work, 'unsigned')}:v1`).then(
      () => undefined,
      (err: Error) => err.message,
    );
    expect(refused).toMatch(/denied|403/i);
    // The server's output reaches the test through a pipe, a moment after skopeo has its answer.
    await expect.poll(() => outpost.logs(), { timeout: 5000 }).toMatch(/"msg":"signature gate".*"result":"denied"/);
  });

  it('containerd pulls a signed image through a hosts.toml mirror and is refused an unsigned one', async () => {
    let ctd: Containerd | undefined;
    try {
      ctd = await startContainerd();
      const hostsDir = join(work, 'hosts');
      await writeHostsToml(hostsDir, 'docker.io', outpost.url, { server: UNREACHABLE_SERVER });
      const ok = await ctd.pull('docker.io/library/signed:v1', { hostsDir });
      expect(ok.code, ok.stderr).toBe(0);
      const refused = await ctd.pull('docker.io/library/unsigned:v1', { hostsDir });
      expect(refused.code).not.toBe(0);
    } finally {
      await ctd?.stop();
    }
  });
});
