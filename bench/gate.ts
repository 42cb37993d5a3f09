/**
 * npm run bench:gate: what the signature gate adds to a manifest GET, against the same GET of an
 * ungated repository in the same run (the peer), on the embedded store (files + SQLite) through
 * the HTTP app in process (no network, so the figure is the gate's own cost):
 *   - a gated GET whose verdict is cached (goal: under 1 ms added at the median)
 *   - a cold verification (no verdict yet): the signature manifest and payload read from the
 *     store and the signature checked, per key type
 * BENCH_GATE_REQUESTS (default 2000) warm requests per side, BENCH_GATE_COLD (default 50) cold
 * ones per key type.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nodeHash } from '../src/adapters/crypto/node-hash.js';
import { FsBlobStore } from '../src/adapters/local/fs-blob-store.js';
import { SqliteMetaIndex } from '../src/adapters/local/sqlite-meta-index.js';
import type { GatePolicy } from '../src/core/gate/gate.js';
import { compileGlob } from '../src/core/glob.js';
import { MediaType } from '../src/core/oci/media-types.js';
import { createRegistry } from '../src/core/registry/registry.js';
import { createApp } from '../src/http/app.js';
import { systemClock } from '../src/ports/clock.js';
import { median } from './harness.js';
import { cosignPayload, generateSigner, signatureLayer, type TestAlgorithm, type TestSigner } from '../test/support/cosign-sign.js';
import { blob, image } from '../test/support/images.js';

const WARM = Number(process.env.BENCH_GATE_REQUESTS ?? 2000);
const COLD = Number(process.env.BENCH_GATE_COLD ?? 50);
const ALGORITHMS: TestAlgorithm[] = ['ecdsa-p256', 'ed25519', 'rsa-pkcs1'];

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'outpost-bench-gate-'));
  try {
    const signers = new Map<TestAlgorithm, TestSigner>();
    for (const a of ALGORITHMS) signers.set(a, await generateSigner(a));
    const policies: GatePolicy[] = ALGORITHMS.map((a) => ({
      name: a,
      repositories: [compileGlob(`signed/${a}`)],
      mode: 'enforce',
      keys: [{ label: a, pem: signers.get(a)!.pem }],
      requireTransparencyLog: false,
      children: true,
      verdictTtlMs: 60 * 60_000,
    }));
    const index = new SqliteMetaIndex(join(dir, 'index.db'), systemClock);
    const registry = createRegistry({ store: new FsBlobStore(dir), index, hash: nodeHash, clock: systemClock, gate: { policies } });
    const app = createApp({ registry });
    const push = async (name: string, path: string, body: Uint8Array, type?: string) => {
      const res = await app.request(`/v2/${name}/${path}`, { method: path.startsWith('blobs') ? 'POST' : 'PUT', body: body as Uint8Array<ArrayBuffer>, headers: type ? { 'Content-Type': type } : {} });
      if (res.status !== 201) throw new Error(`${path}: ${res.status} ${await res.text()}`);
    };
    const pushImage = async (name: string, img: ReturnType<typeof image>, tag: string) => {
      for (const b of [img.config, ...img.layers]) await push(name, `blobs/uploads/?digest=${b.digest}`, new Uint8Array(b.bytes));
      await push(name, `manifests/${tag}`, new Uint8Array(img.manifest.bytes), img.manifest.mediaType);
    };
    const sign = async (name: string, signer: TestSigner, digest: string) => {
      const payload = cosignPayload(digest);
      const layer = await signatureLayer(payload, await signer.sign(payload));
      const config = blob('{}', 'application/vnd.oci.image.config.v1+json');
      await push(name, `blobs/uploads/?digest=${config.digest}`, new Uint8Array(config.bytes));
      await push(name, `blobs/uploads/?digest=${layer.digest}`, payload);
      const manifest = JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config: { mediaType: config.mediaType, digest: config.digest, size: config.size }, layers: [layer] });
      await push(name, `manifests/sha256-${digest.slice(7)}.sig`, new TextEncoder().encode(manifest), MediaType.OciManifest);
    };
    const get = async (path: string): Promise<number> => {
      const start = process.hrtime.bigint();
      const res = await app.request(path);
      await res.arrayBuffer();
      const ms = Number(process.hrtime.bigint() - start) / 1e6;
      if (res.status !== 200) throw new Error(`${path}: ${res.status}`);
      return ms;
    };

    // Warm: one image, gated (verdict cached after the first GET) and not, alternating.
    const warm = image({ layers: [100] });
    await pushImage('plain/app', warm, 'v1');
    await pushImage('signed/ecdsa-p256', warm, 'v1');
    await sign('signed/ecdsa-p256', signers.get('ecdsa-p256')!, warm.manifest.digest);
    for (let i = 0; i < 200; i++) {
      await get('/v2/plain/app/manifests/v1');
      await get('/v2/signed/ecdsa-p256/manifests/v1');
    }
    const plain: number[] = [];
    const gated: number[] = [];
    for (let i = 0; i < WARM; i++) {
      plain.push(await get('/v2/plain/app/manifests/v1'));
      gated.push(await get('/v2/signed/ecdsa-p256/manifests/v1'));
    }
    const base = median(plain);
    console.log(`bench: warm GET, ${WARM} each: ungated ${base.toFixed(3)} ms, gated with a cached verdict ${median(gated).toFixed(3)} ms at the median (p99 ${p99(plain).toFixed(3)} / ${p99(gated).toFixed(3)} ms)`);
    const rows = [`| gated GET, verdict cached | ${median(gated).toFixed(3)} ms | ${base.toFixed(3)} ms | +${(median(gated) - base).toFixed(3)} ms (${(median(gated) / base).toFixed(2)}x) |`];

    // Cold: each GET is the first of its digest, so the gate verifies.
    for (const a of ALGORITHMS) {
      const times: number[] = [];
      for (let i = 0; i < COLD; i++) {
        const img = image({ layers: [50 + i] });
        await pushImage(`signed/${a}`, img, `c${i}`);
        await sign(`signed/${a}`, signers.get(a)!, img.manifest.digest);
        times.push(await get(`/v2/signed/${a}/manifests/c${i}`));
      }
      console.log(`bench: cold verification, ${a}, ${COLD}: ${median(times).toFixed(3)} ms at the median`);
      rows.push(`| gated GET, first of its digest (${a}) | ${median(times).toFixed(3)} ms | ${base.toFixed(3)} ms | +${(median(times) - base).toFixed(3)} ms |`);
    }
    console.log('\n| request (embedded store, in process) | gated | ungated, same run | added |\n|---|---|---|---|');
    for (const r of rows) console.log(r);
    index.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function p99(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length * 0.99)]!;
}

await main();
