import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { index } from '../../support/images.js';
import { expectSameBlobs, imageBlobs, readLayout, tarImage, writeDirImage, writeLayout } from '../support/oci-layout.js';
import type { OutpostProcess } from '../support/server.js';
import { skopeo, skopeoBytes } from '../support/skopeo.js';
import type { Target } from '../support/targets.js';

/**
 * skopeo, a real OCI client, pushing to and pulling from an Outpost: `skopeoRoundTrip(target)`
 * registers the suite for one way of running it (test/e2e/support/targets.ts). Content is made
 * in code as an OCI image layout; with --preserve-digests nothing may change on the way, so
 * every manifest and blob must come back byte for byte.
 */

const MiB = 1024 * 1024;

// One image with layers of very different sizes (one of several MiB), and a two-platform index.
const app = tarImage({ layers: [6 * MiB, 300 * 1024, 1024, 10] });
const amd64 = tarImage({ layers: [512 * 1024, 2048], arch: 'amd64' });
const arm64 = tarImage({ layers: [256 * 1024, 4096], arch: 'arm64' });
const multi = index([
  { manifest: amd64.manifest, arch: 'amd64' },
  { manifest: arm64.manifest, arch: 'arm64' },
]);
const docker = tarImage({ layers: [64 * 1024, 512], docker: true });

export function skopeoRoundTrip(target: Target): void {
  describe(`skopeo against ${target.name}`, () => {
    let work: string;
    let layout: string;
    let outpost: OutpostProcess;
    const ref = (repoAndTag: string) => `docker://${outpost.host}/${repoAndTag}`;
    const push = (...args: string[]) => skopeo('copy', '--quiet', '--dest-tls-verify=false', ...args);
    const pull = (...args: string[]) => skopeo('copy', '--quiet', '--src-tls-verify=false', ...args);

    beforeAll(async () => {
      work = await mkdtemp(join(tmpdir(), 'outpost-e2e-skopeo-'));
      layout = join(work, 'source');
      await writeLayout(layout, { app: app.manifest, multi }, [...imageBlobs(app), ...imageBlobs(amd64), ...imageBlobs(arm64)]);
      await writeDirImage(join(work, 'docker-source'), docker);
      outpost = await target.start(work, 'skopeo');
    });

    afterAll(async () => {
      await outpost?.stop();
      if (work) await rm(work, { recursive: true, force: true });
    });

    it('pushes an image from an OCI layout without changing a byte', async () => {
      await push('--preserve-digests', `oci:${layout}:app`, ref('e2e/app:v1'));

      const res = await fetch(`${outpost.url}/v2/e2e/app/manifests/v1`, { headers: { Accept: app.manifest.mediaType } });
      expect(res.status).toBe(200);
      expect(res.headers.get('docker-content-digest')).toBe(app.manifest.digest);
      expect(Buffer.from(await res.arrayBuffer()).equals(app.manifest.bytes)).toBe(true);
      for (const b of [app.config, ...app.layers]) {
        const head = await fetch(`${outpost.url}/v2/e2e/app/blobs/${b.digest}`, { method: 'HEAD' });
        expect(head.status, b.digest).toBe(200);
        expect(head.headers.get('content-length')).toBe(String(b.size));
      }
    });

    it('serves the manifest to `skopeo inspect --raw` byte for byte', async () => {
      const raw = await skopeoBytes('inspect', '--raw', '--tls-verify=false', ref('e2e/app:v1'));
      expect(raw.equals(app.manifest.bytes)).toBe(true);

      const inspected = JSON.parse(await skopeo('inspect', '--tls-verify=false', ref('e2e/app:v1'))) as {
        Digest: string;
        Architecture: string;
        Layers: string[];
      };
      expect(inspected.Digest).toBe(app.manifest.digest);
      expect(inspected.Architecture).toBe('amd64');
      expect(inspected.Layers).toEqual(app.layers.map((l) => l.digest));
    });

    it('pulls the image back with every blob and the manifest byte-identical', async () => {
      const target = join(work, 'pulled-app');
      await pull('--preserve-digests', ref('e2e/app:v1'), `oci:${target}:v1`);

      const pulled = await readLayout(target);
      expect(pulled.ref('v1')).toEqual({ mediaType: app.manifest.mediaType, digest: app.manifest.digest, size: app.manifest.size });
      expectSameBlobs(pulled.blobs, imageBlobs(app));
    });

    it('copies a multi-arch index with --all both ways, byte-identical', async () => {
      await push('--all', '--preserve-digests', `oci:${layout}:multi`, ref('e2e/multi:v1'));

      const raw = await skopeoBytes('inspect', '--raw', '--tls-verify=false', ref('e2e/multi:v1'));
      expect(raw.equals(multi.bytes)).toBe(true);
      for (const child of [amd64, arm64]) {
        const res = await fetch(`${outpost.url}/v2/e2e/multi/manifests/${child.manifest.digest}`, {
          headers: { Accept: child.manifest.mediaType },
        });
        expect(res.status).toBe(200);
        expect(Buffer.from(await res.arrayBuffer()).equals(child.manifest.bytes)).toBe(true);
      }

      const target = join(work, 'pulled-multi');
      await pull('--all', '--preserve-digests', ref('e2e/multi:v1'), `oci:${target}:v1`);
      const pulled = await readLayout(target);
      expect(pulled.ref('v1')).toEqual({ mediaType: multi.mediaType, digest: multi.digest, size: multi.size });
      expectSameBlobs(pulled.blobs, [multi, ...imageBlobs(amd64), ...imageBlobs(arm64)]);
    });

    it('copies between repositories of the registry and lists the tags', async () => {
      // Registry to registry: skopeo checks which blobs the target has and mounts or re-uploads.
      await skopeo('copy', '--quiet', '--src-tls-verify=false', '--dest-tls-verify=false', '--preserve-digests', ref('e2e/app:v1'), ref('e2e/app:latest'));
      await skopeo('copy', '--quiet', '--src-tls-verify=false', '--dest-tls-verify=false', '--preserve-digests', ref('e2e/app:v1'), ref('e2e/copy:v1'));

      const tags = JSON.parse(await skopeo('list-tags', '--tls-verify=false', `docker://${outpost.host}/e2e/app`)) as {
        Repository: string;
        Tags: string[];
      };
      expect(tags.Repository).toBe(`${outpost.host}/e2e/app`);
      expect(tags.Tags.sort()).toEqual(['latest', 'v1']);
      const copied = await skopeoBytes('inspect', '--raw', '--tls-verify=false', ref('e2e/copy:v1'));
      expect(copied.equals(app.manifest.bytes)).toBe(true);
    });

    it('pushes a Docker schema 2 image as is', async () => {
      // skopeo reads only OCI manifests from an OCI layout, so this image comes from a dir: copy.
      await push('--preserve-digests', `dir:${join(work, 'docker-source')}`, ref('e2e/docker:as-is'));

      const raw = await skopeoBytes('inspect', '--raw', '--tls-verify=false', ref('e2e/docker:as-is'));
      expect(raw.equals(docker.manifest.bytes)).toBe(true);
      const res = await fetch(`${outpost.url}/v2/e2e/docker/manifests/as-is`, { headers: { Accept: docker.manifest.mediaType } });
      expect(res.headers.get('content-type')).toBe('application/vnd.docker.distribution.manifest.v2+json');
      await res.arrayBuffer();

      // The dir: transport keeps the manifest as it came, so the pull can be compared exactly.
      const target = join(work, 'pulled-docker');
      await pull('--preserve-digests', ref('e2e/docker:as-is'), `dir:${target}`);
      expect((await readFile(join(target, 'manifest.json'))).equals(docker.manifest.bytes)).toBe(true);
      for (const b of [docker.config, ...docker.layers]) {
        expect((await readFile(join(target, b.digest.slice('sha256:'.length)))).equals(b.bytes), b.digest).toBe(true);
      }
    });

    it('pushes an OCI image converted to Docker schema 2 (--format v2s2) and pulls it back', async () => {
      // Conversion rewrites the manifest (new media types), so only the blobs keep their bytes.
      await push('--format', 'v2s2', `oci:${layout}:app`, ref('e2e/converted:v1'));

      const raw = await skopeoBytes('inspect', '--raw', '--tls-verify=false', ref('e2e/converted:v1'));
      const manifest = JSON.parse(raw.toString()) as { mediaType: string; config: { digest: string }; layers: Array<{ digest: string }> };
      expect(manifest.mediaType).toBe('application/vnd.docker.distribution.manifest.v2+json');
      expect(manifest.layers.map((l) => l.digest)).toEqual(app.layers.map((l) => l.digest));

      const target = join(work, 'pulled-converted');
      await pull(ref('e2e/converted:v1'), `dir:${target}`);
      expect((await readFile(join(target, 'manifest.json'))).equals(raw)).toBe(true);
      for (const b of app.layers) {
        expect((await readFile(join(target, b.digest.slice('sha256:'.length)))).equals(b.bytes), b.digest).toBe(true);
      }
      expect(await readdir(target)).toContain(manifest.config.digest.slice('sha256:'.length));
    });

    it('deletes the image: its manifest and every tag on it are gone', async () => {
      await skopeo('delete', '--tls-verify=false', ref('e2e/app:v1'));

      for (const reference of ['v1', 'latest', app.manifest.digest]) {
        const res = await fetch(`${outpost.url}/v2/e2e/app/manifests/${reference}`, { headers: { Accept: app.manifest.mediaType } });
        expect(res.status, reference).toBe(404);
        expect(((await res.json()) as { errors: Array<{ code: string }> }).errors[0]?.code).toBe('MANIFEST_UNKNOWN');
      }
      // Other repositories holding the same manifest keep it.
      const copied = await fetch(`${outpost.url}/v2/e2e/copy/manifests/v1`, { method: 'HEAD', headers: { Accept: app.manifest.mediaType } });
      expect(copied.status).toBe(200);
    });
  });
}
