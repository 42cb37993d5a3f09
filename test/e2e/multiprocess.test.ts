import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorCode } from '../support/app.js';
import { blob, image } from '../support/images.js';
import { expectSameBlobs, imageBlobs, readLayout, tarImage, writeLayout } from './support/oci-layout.js';
import { getManifest, pushBlob, pushManifest, raceFirstChunk, tagList } from './support/registry-client.js';
import { startOutpost, type OutpostProcess } from './support/server.js';
import { skopeo } from './support/skopeo.js';

/**
 * Two Outpost processes, A and B, on ONE data directory: the embedded store is meant to be
 * shared (blobs by atomic rename, the index in SQLite with WAL), and no state may live in
 * process memory, so any request may go to either process.
 */

const MiB = 1024 * 1024;

let work: string;
let a: OutpostProcess;
let b: OutpostProcess;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'outpost-e2e-multi-'));
  const data = join(work, 'data');
  // Started together, as a deployment would: both create the store and index at once.
  [a, b] = await Promise.all([startOutpost(data), startOutpost(data)]);
});

afterAll(async () => {
  await Promise.all([a?.stop(), b?.stop()]);
  if (work) await rm(work, { recursive: true, force: true });
});

describe('two Outpost processes on one data directory', () => {
  it('pulls through B, byte-identical, an image skopeo pushed through A', async () => {
    const img = tarImage({ layers: [3 * MiB, 64 * 1024, 100] });
    const source = join(work, 'source');
    await writeLayout(source, { img: img.manifest }, imageBlobs(img));

    await skopeo('copy', '--quiet', '--dest-tls-verify=false', '--preserve-digests', `oci:${source}:img`, `docker://${a.host}/e2e/shared:v1`);
    const target = join(work, 'pulled');
    await skopeo('copy', '--quiet', '--src-tls-verify=false', '--preserve-digests', `docker://${b.host}/e2e/shared:v1`, `oci:${target}:v1`);

    const pulled = await readLayout(target);
    expect(pulled.ref('v1').digest).toBe(img.manifest.digest);
    expectSameBlobs(pulled.blobs, imageBlobs(img));
  });

  it('completes a chunked upload whose requests alternate between the processes', async () => {
    const content = blob(randomBytes(2 * MiB + 12_345), 'application/octet-stream');
    const split = MiB + 7; // deliberately not aligned to anything
    const chunks = [content.bytes.subarray(0, split), content.bytes.subarray(split)];
    const name = 'e2e/chunked';

    const started = await fetch(`${a.url}/v2/${name}/blobs/uploads/`, { method: 'POST' });
    expect(started.status).toBe(202);
    const location = started.headers.get('location')!;
    expect(location).toBeTruthy();

    const patch = async (server: OutpostProcess, at: string, chunk: Buffer, start: number) => {
      const res = await fetch(new URL(at, server.url), {
        method: 'PATCH',
        body: new Uint8Array(chunk),
        headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': `${start}-${start + chunk.length - 1}` },
      });
      expect(res.status, `PATCH through ${server.port}: ${await res.text()}`).toBe(202);
      expect(res.headers.get('range')).toBe(`0-${start + chunk.length - 1}`);
      return res.headers.get('location')!;
    };
    const afterFirst = await patch(b, location, chunks[0]!, 0);
    const afterSecond = await patch(a, afterFirst, chunks[1]!, split);

    // Either process reports the same progress.
    const status = await fetch(new URL(afterSecond, b.url));
    expect(status.status).toBe(204);
    expect(status.headers.get('range')).toBe(`0-${content.size - 1}`);

    const complete = new URL(afterSecond, b.url);
    complete.searchParams.set('digest', content.digest);
    const put = await fetch(complete, { method: 'PUT' });
    expect(put.status, await put.text()).toBe(201);
    expect(put.headers.get('docker-content-digest')).toBe(content.digest);

    const got = await fetch(`${a.url}/v2/${name}/blobs/${content.digest}`);
    expect(got.status).toBe(200);
    expect(Buffer.from(await got.arrayBuffer()).equals(content.bytes)).toBe(true);
    // The session is gone for both processes.
    const stale = await fetch(new URL(afterSecond, a.url));
    expect(stale.status).toBe(404);
    expect(await errorCode(stale)).toBe('BLOB_UPLOAD_UNKNOWN');
  });

  it('accepts exactly one of two chunks raced to the same offset through both processes', async () => {
    const name = 'e2e/chunk-race';
    const { location, winner } = await raceFirstChunk(b, name, [a, b]);

    // The upload holds the winner's bytes only: completing with its digest succeeds.
    const complete = new URL(location, a.url);
    complete.searchParams.set('digest', blob(winner).digest);
    const put = await fetch(complete, { method: 'PUT' });
    expect(put.status, await put.text()).toBe(201);
    const got = await fetch(`${b.url}/v2/${name}/blobs/${blob(winner).digest}`);
    expect(Buffer.from(await got.arrayBuffer()).equals(winner)).toBe(true);
  });

  it('lets skopeo push the same image through both processes at once', async () => {
    const img = tarImage({ layers: [2 * MiB, 32 * 1024] });
    const source = join(work, 'source-twice');
    await writeLayout(source, { img: img.manifest }, imageBlobs(img));

    await Promise.all(
      [a, b].map((server) =>
        skopeo('copy', '--quiet', '--dest-tls-verify=false', '--preserve-digests', `oci:${source}:img`, `docker://${server.host}/e2e/twice:${server.port}`),
      ),
    );
    expect((await tagList(a, 'e2e/twice')).sort()).toEqual([String(a.port), String(b.port)].sort());
    for (const x of [img.config, ...img.layers]) {
      const res = await fetch(`${a.url}/v2/e2e/twice/blobs/${x.digest}`);
      expect(Buffer.from(await res.arrayBuffer()).equals(x.bytes), x.digest).toBe(true);
    }
  });

  it('keeps tags and manifests consistent under concurrent pushes through both processes', async () => {
    const name = 'e2e/race';
    const images = Array.from({ length: 12 }, () => image({ layers: [2048, 512] }));
    const via = (i: number) => (i % 2 === 0 ? a : b);

    // The same blobs uploaded through both processes at once: both writers must succeed.
    const shared = blob(randomBytes(256 * 1024));
    await Promise.all([pushBlob(a, name, shared), pushBlob(b, name, shared)]);
    await Promise.all(images.flatMap((img, i) => [img.config, ...img.layers].map((x) => pushBlob(via(i), name, x))));

    // Each image under its own tag, and all of them fighting over one tag, through both processes.
    await Promise.all(
      images.flatMap((img, i) => [
        pushManifest(via(i), name, `t${i}`, img.manifest),
        pushManifest(via(i + 1), name, 'contested', img.manifest),
      ]),
    );

    const expected = ['contested', ...images.map((_, i) => `t${i}`)].sort();
    const [fromA, fromB] = await Promise.all([tagList(a, name), tagList(b, name)]);
    expect([...fromA].sort()).toEqual(expected);
    expect(fromB).toEqual(fromA);

    for (const [i, img] of images.entries()) {
      for (const server of [a, b]) {
        const got = await getManifest(server, name, `t${i}`);
        expect(got.digest).toBe(img.manifest.digest);
        expect(got.bytes.equals(img.manifest.bytes)).toBe(true);
      }
    }
    // The contested tag names one of the pushed manifests, and the same one for both processes.
    const [winnerA, winnerB] = await Promise.all([getManifest(a, name, 'contested'), getManifest(b, name, 'contested')]);
    expect(winnerB.digest).toBe(winnerA.digest);
    const winner = images.find((img) => img.manifest.digest === winnerA.digest);
    expect(winner, `contested -> ${winnerA.digest}`).toBeDefined();
    expect(winnerA.bytes.equals(winner!.manifest.bytes)).toBe(true);

    const sharedBack = await fetch(`${b.url}/v2/${name}/blobs/${shared.digest}`);
    expect(Buffer.from(await sharedBack.arrayBuffer()).equals(shared.bytes)).toBe(true);
  });
});
