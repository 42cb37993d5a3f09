import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_UPLOAD_PARTS } from '../../src/core/registry/uploads.js';
import { sha256 } from '../support/images.js';
import { startOutpost, type OutpostProcess } from './support/server.js';

/**
 * Uploads at the chunk limit on the real Node server, where it was found: Node hands every
 * PATCH and PUT a body stream, even an empty one, so a final PUT with no bytes must not count
 * as a chunk (issue 7, item 2).
 */

let work: string;
let server: OutpostProcess;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'outpost-e2e-uploads-'));
  server = await startOutpost(join(work, 'data'));
});

afterAll(async () => {
  await server?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

describe('an upload of exactly MAX_UPLOAD_PARTS chunks on Node', () => {
  it('takes an empty PATCH at the limit and completes with a PUT that has no body', async () => {
    const name = 'e2e/limit';
    const started = await fetch(`${server.url}/v2/${name}/blobs/uploads/`, { method: 'POST' });
    expect(started.status).toBe(202);
    const location = `${server.url}${started.headers.get('location')}`;
    for (let i = 0; i < MAX_UPLOAD_PARTS; i++) {
      const res = await fetch(location, { method: 'PATCH', body: new Uint8Array([i % 256]), headers: { 'Content-Type': 'application/octet-stream' } });
      await res.arrayBuffer();
      if (res.status !== 202) throw new Error(`chunk ${i}: ${res.status}`);
    }
    const empty = await fetch(location, { method: 'PATCH', body: new Uint8Array(0) });
    expect(empty.status, await empty.text()).toBe(202);
    expect(empty.headers.get('range')).toBe(`0-${MAX_UPLOAD_PARTS - 1}`);

    const bytes = Uint8Array.from({ length: MAX_UPLOAD_PARTS }, (_, i) => i % 256);
    const done = await fetch(`${location}?digest=${sha256(bytes)}`, { method: 'PUT' });
    expect(done.status, await done.text()).toBe(201);
    const got = await fetch(`${server.url}/v2/${name}/blobs/${sha256(bytes)}`);
    expect(Buffer.from(await got.arrayBuffer()).equals(Buffer.from(bytes))).toBe(true);
  });
});
