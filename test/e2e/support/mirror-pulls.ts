import { join } from 'node:path';
import { expect } from 'vitest';
import { expectSameBlobs, imageBlobs, readLayout } from './oci-layout.js';
import type { OutpostProcess } from './server.js';
import { skopeo } from './skopeo.js';
import type { Blob, Image } from '../../support/images.js';
import type { ThrottleProxy } from './throttle-proxy.js';
import type { UpstreamRegistry } from './upstream-registry.js';

/**
 * The mirror's e2e measure: `clients` concurrent cold skopeo pulls spread round-robin over the
 * instances (client i pulls images[i % images.length] from `/<alias>/<repository>:v1`), every
 * pull checked byte for byte; then the upstream's own log must show exactly one GET per unique
 * blob, of exactly its size (upstream amplification 1.00).
 */
export async function pullConcurrently(
  instances: OutpostProcess[],
  images: Array<{ repository: string; image: Image }>,
  clients: number,
  work: string,
): Promise<void> {
  await Promise.all(
    Array.from({ length: clients }, (_, i) =>
      skopeo('copy', '--quiet', '--src-tls-verify=false', `docker://${instances[i % instances.length]!.host}/${images[i % images.length]!.repository}:v1`, `oci:${join(work, `pull-${i}`)}:v1`),
    ),
  );
  for (let i = 0; i < clients; i++) {
    const img = images[i % images.length]!.image;
    const pulled = await readLayout(join(work, `pull-${i}`));
    expect(pulled.ref('v1')).toEqual({ mediaType: img.manifest.mediaType, digest: img.manifest.digest, size: img.manifest.size });
    expectSameBlobs(pulled.blobs, imageBlobs(img));
  }
}

/**
 * `instances`, when given, add their fill log lines for a blob fetched more than once to the
 * failure's message (who led it, from which byte, how each fill ended).
 */
export async function expectOneDownloadPerBlob(up: UpstreamRegistry, images: Image[], instances: OutpostProcess[] = []): Promise<void> {
  const served = await up.requests();
  const unique = new Map(images.flatMap((img) => [img.config, ...img.layers]).map((b) => [b.digest, b]));
  let upstreamBytes = 0;
  for (const b of unique.values()) {
    const gets = served.filter((r) => r.method === 'GET' && r.kind === 'blob' && r.digest === b.digest && r.status === 200);
    // What each GET was, so that a second download can be told from a resumed one when it fails.
    const described = gets.map((g) => ({ status: g.status, bytes: g.bytes, of: b.size, query: g.query, userAgent: g.userAgent }));
    const fills = () =>
      instances.flatMap((i, n) =>
        i
          .logs()
          .split('\n')
          .filter((line) => line.includes('"msg":"fill.') && line.includes(b.digest))
          .map((line) => `instance ${n}: ${line}`),
      );
    if (gets.length !== 1) expect(gets, `upstream GETs of ${b.digest}: ${JSON.stringify(described)}\n${fills().join('\n')}`).toHaveLength(1);
    expect(gets[0]!.bytes).toBe(b.size);
    upstreamBytes += gets[0]!.bytes;
  }
  const uniqueBytes = [...unique.values()].reduce((n, b) => n + b.size, 0);
  expect(upstreamBytes / uniqueBytes).toBe(1);
}

/**
 * The leader killed mid-fill: `leader` is asked for `blob` (vouched for first, by a HEAD), read
 * until it has sent two parts and a MiB (and `settleMs` more, for the second part's write to
 * land in the store and the index), then SIGKILLed; `successor` is asked for the blob next. Its
 * answer must be the right bytes, from exactly one more upstream GET (seen at `throttle`, the
 * slow upstream in front of the real one) that resumes by Range at a part boundary no earlier
 * than the two stored parts and carries exactly the rest of the blob. Returns the two GETs and
 * how long the successor's answer took, for the caller's own bounds.
 */
export async function killLeaderMidFill(
  leader: OutpostProcess,
  successor: OutpostProcess,
  o: { path: string; blob: Blob; throttle: ThrottleProxy; partBytes: number; settleMs: number },
): Promise<{ gets: ThrottleProxy['requests']; resumedAt: number; tookMs: number }> {
  const MiB = 1024 * 1024;
  expect((await fetch(`${leader.url}${o.path}`, { method: 'HEAD' })).status).toBe(200);
  const res = await fetch(`${leader.url}${o.path}`);
  expect(res.status).toBe(200);
  const reader = res.body!.getReader();
  let received = 0;
  while (received < 2 * o.partBytes + MiB) received += (await reader.read()).value!.byteLength;
  await new Promise((r) => setTimeout(r, o.settleMs));
  process.kill(leader.pid, 'SIGKILL');
  await reader.cancel().catch(() => undefined);
  const startedAt = Date.now();
  const other = await fetch(`${successor.url}${o.path}`);
  expect(other.status).toBe(200);
  const bytes = Buffer.from(await other.arrayBuffer());
  expect(bytes.equals(Buffer.from(o.blob.bytes))).toBe(true);
  const tookMs = Date.now() - startedAt;
  // (A 401 is the upstream client's first, anonymous try on an instance, answered by the Basic retry.)
  const gets = o.throttle.requests.filter((r) => r.method === 'GET' && r.path.endsWith(o.blob.digest) && r.status !== 401);
  expect(gets, JSON.stringify(gets)).toHaveLength(2);
  const resumedAt = Number(/^bytes=(\d+)-/.exec(gets[1]!.range ?? '')?.[1]);
  // What the dead leader had stored (its first two parts, at least) is not downloaded again.
  expect(resumedAt).toBeGreaterThanOrEqual(2 * o.partBytes);
  expect(resumedAt % o.partBytes).toBe(0);
  expect(gets[1]!.bytes).toBe(o.blob.size - resumedAt);
  return { gets, resumedAt, tookMs };
}
