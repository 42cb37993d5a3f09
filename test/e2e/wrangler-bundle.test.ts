import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { offlineWranglerEnv } from './support/worker.js';

/**
 * The Worker as `wrangler deploy` would upload it, built offline with `--dry-run --outdir`:
 * its size (Cloudflare refuses a Worker over its plan's compressed size limit, and a big script
 * starts slower; we hold ourselves to 1 MiB gzipped) and what went into it.
 */

const ROOT = resolve(fileURLToPath(import.meta.url), '../../..');
const WRANGLER = join(ROOT, 'node_modules/wrangler/bin/wrangler.js');
const MAX_GZIP_BYTES = 1024 * 1024;
const KiB = (n: number) => `${(n / 1024).toFixed(1)} KiB`;

let work: string;
let output: string;
let bundle: Buffer;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'outpost-e2e-bundle-'));
  const outdir = join(work, 'out');
  output = await new Promise<string>((done, fail) => {
    execFile(
      process.execPath,
      [WRANGLER, 'deploy', '--dry-run', '--outdir', outdir],
      { cwd: ROOT, env: offlineWranglerEnv(join(work, 'logs')), timeout: 120_000, maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) => (err ? fail(new Error(`wrangler deploy --dry-run failed: ${err.message}\n${stdout}${stderr}`)) : done(stdout + stderr)),
    );
  });
  // The entry module, named after wrangler.toml's main (src/entry/workers.ts).
  const modules = (await readdir(outdir)).filter((f) => f.endsWith('.js'));
  expect(modules, `wrangler wrote ${modules.join(', ')}`).toEqual(['workers.js']);
  bundle = await readFile(join(outdir, 'workers.js'));
});

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

describe('the Worker bundle (wrangler deploy --dry-run)', () => {
  it('is under 1 MiB gzipped', () => {
    const gzipped = gzipSync(bundle, { level: 9 }).byteLength;
    const reported = /Total Upload: ([^\n]+)/.exec(output)?.[1]?.trim();
    console.log(`wrangler bundle: workers.js ${KiB(bundle.byteLength)} raw, ${KiB(gzipped)} gzipped (wrangler: ${reported ?? 'no report'})`);
    expect(gzipped).toBeLessThan(MAX_GZIP_BYTES);
  });

  it('parses S3 XML without DOMParser, which workerd does not have (the xml-builder alias)', () => {
    expect(bundle.includes('DOMParser')).toBe(false);
  });

  it('leaves the local store out: no SQLite, no filesystem', () => {
    const text = bundle.toString('utf8');
    expect(text).not.toMatch(/better-sqlite3/);
    expect(text).not.toMatch(/["'](node:)?fs(\/promises)?["']/);
  });
});
