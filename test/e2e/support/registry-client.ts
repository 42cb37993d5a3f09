import { randomBytes } from 'node:crypto';
import { expect } from 'vitest';
import { errorCode } from '../../support/app.js';
import type { Blob } from '../../support/images.js';
import type { OutpostProcess } from './server.js';

/**
 * Plain HTTP calls against a running Outpost, for the e2e tests that send requests to several
 * instances by hand. Every assertion names the instance (by port) that answered.
 */

/** A monolithic blob upload: POST ?digest= with the whole body. */
export async function pushBlob(server: OutpostProcess, name: string, content: Blob): Promise<void> {
  const res = await fetch(`${server.url}/v2/${name}/blobs/uploads/?digest=${content.digest}`, {
    method: 'POST',
    body: new Uint8Array(content.bytes),
    headers: { 'Content-Type': 'application/octet-stream' },
  });
  expect(res.status, `${await res.text()} (blob ${content.digest} through ${server.port})`).toBe(201);
}

export async function pushManifest(server: OutpostProcess, name: string, reference: string, manifest: Blob): Promise<void> {
  const res = await fetch(`${server.url}/v2/${name}/manifests/${reference}`, {
    method: 'PUT',
    body: new Uint8Array(manifest.bytes),
    headers: { 'Content-Type': manifest.mediaType },
  });
  expect(res.status, `${await res.text()} (manifest ${reference} through ${server.port})`).toBe(201);
  expect(res.headers.get('docker-content-digest')).toBe(manifest.digest);
}

export async function getManifest(server: OutpostProcess, name: string, reference: string): Promise<{ digest: string | null; bytes: Buffer }> {
  const res = await fetch(`${server.url}/v2/${name}/manifests/${reference}`, {
    headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' },
  });
  expect(res.status, `manifest ${reference} through ${server.port}`).toBe(200);
  return { digest: res.headers.get('docker-content-digest'), bytes: Buffer.from(await res.arrayBuffer()) };
}

export async function tagList(server: OutpostProcess, name: string): Promise<string[]> {
  const res = await fetch(`${server.url}/v2/${name}/tags/list`);
  expect(res.status).toBe(200);
  return ((await res.json()) as { tags: string[] }).tags;
}

/**
 * Starts an upload through `starter`, then sends two different first chunks to it at once, one
 * through each of `racers`. Exactly one may win (202); the other must get 416
 * BLOB_UPLOAD_INVALID with the Range the winner left. Returns the upload's location and the
 * winner's bytes.
 */
export async function raceFirstChunk(
  starter: OutpostProcess,
  name: string,
  racers: [OutpostProcess, OutpostProcess],
): Promise<{ location: string; winner: Buffer }> {
  const started = await fetch(`${starter.url}/v2/${name}/blobs/uploads/`, { method: 'POST' });
  expect(started.status).toBe(202);
  const location = started.headers.get('location')!;
  const candidates = [randomBytes(256 * 1024), randomBytes(256 * 1024)];

  const results = await Promise.all(
    racers.map((server, i) =>
      fetch(new URL(location, server.url), {
        method: 'PATCH',
        body: new Uint8Array(candidates[i]!),
        headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': `0-${candidates[i]!.length - 1}` },
      }),
    ),
  );
  const statuses = results.map((r) => r.status);
  expect([...statuses].sort(), `statuses ${statuses} (through ${racers.map((s) => s.port)})`).toEqual([202, 416]);
  const loser = results.find((r) => r.status === 416)!;
  expect(await errorCode(loser)).toBe('BLOB_UPLOAD_INVALID');
  const winner = candidates[statuses.indexOf(202)]!;
  // The loser is told where the upload really stands, so it could resume from there.
  expect(loser.headers.get('range')).toBe(`0-${winner.length - 1}`);
  return { location, winner };
}
