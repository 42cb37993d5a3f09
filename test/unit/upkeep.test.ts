import { describe, expect, it } from 'vitest';
import { DEFAULT_GC_CONFIG } from '../../src/core/gc/config.js';
import { parseDigest } from '../../src/core/oci/digest.js';
import { objects } from '../../src/core/registry/keys.js';
import type { Registry } from '../../src/core/registry/registry.js';
import { createLog } from '../../src/entry/log.js';
import { upkeep } from '../../src/entry/upkeep.js';
import { testApp } from '../support/app.js';
import { randomBlob, type Blob } from '../support/images.js';

/**
 * One upkeep pass (entry/upkeep.ts, what the Workers Cron Trigger runs) over memory adapters:
 * the bound on candidates, the lines it writes, and a failed step. test/workerd/gc.test.ts runs
 * it inside workerd over S3 and DynamoDB.
 */

const GRACE_MS = 60_000;

function logged() {
  const lines: Array<Record<string, unknown>> = [];
  const log = createLog('info', (line) => lines.push(JSON.parse(line) as Record<string, unknown>));
  return { log, lines, msgs: () => lines.map((l) => l.msg) };
}

async function garbage(t: ReturnType<typeof testApp>, n: number): Promise<Blob[]> {
  const blobs = Array.from({ length: n }, () => randomBlob(1000));
  for (const b of blobs) {
    await t.pushBlob('lib/app', b);
    expect((await t.request(`/v2/lib/app/blobs/${b.digest}`, { method: 'DELETE' })).status).toBe(202);
  }
  return blobs;
}

describe('upkeep', () => {
  it('collects at most maxCandidates per pass and leaves the rest listed for the next', async () => {
    const t = testApp();
    const blobs = await garbage(t, 3);
    t.clock.advance(GRACE_MS + 1);
    const { log, lines } = logged();

    const first = await upkeep(t.registry, log, { gc: { ...DEFAULT_GC_CONFIG, graceMs: GRACE_MS }, maxCandidates: 2, fields: { cron: '0 * * * *' } });
    expect(first.gc).toMatchObject({ examined: 2, deleted: 2, failed: 0 });
    const second = await upkeep(t.registry, log, { gc: { ...DEFAULT_GC_CONFIG, graceMs: GRACE_MS }, maxCandidates: 2, fields: { cron: '0 * * * *' } });
    expect(second.gc).toMatchObject({ examined: 1, deleted: 1, failed: 0 });
    for (const b of blobs) expect(await t.store.stat(objects.content(parseDigest(b.digest)))).toBeUndefined();

    expect(lines.map((l) => l.msg)).toEqual(['garbage collection', 'reclaimed leftovers', 'garbage collection', 'reclaimed leftovers']);
    expect(lines[0]).toMatchObject({ level: 'info', cron: '0 * * * *', dryRun: false, examined: 2, deleted: 2, deletedBytes: 2000, failed: 0 });
    expect(lines[1]).toMatchObject({ level: 'info', cron: '0 * * * *', uploads: { deleted: 0 } });
  });

  it('keeps content younger than the grace', async () => {
    const t = testApp();
    await garbage(t, 2);
    const { log } = logged();
    const pass = await upkeep(t.registry, log, { gc: { ...DEFAULT_GC_CONFIG, graceMs: GRACE_MS } });
    expect(pass.gc).toMatchObject({ examined: 2, deleted: 0, outcomes: { young: 2 } });
  });

  it('still reclaims the leftovers when the collection fails, logs the failure, and fails the pass', async () => {
    const t = testApp();
    const failing: Registry = { ...t.registry, gc: () => Promise.reject(new Error('index unreachable')) };
    const { log, lines, msgs } = logged();
    await expect(upkeep(failing, log, { gc: { ...DEFAULT_GC_CONFIG, graceMs: GRACE_MS }, fields: { cron: '*/30 * * * *' } })).rejects.toThrow(/garbage collection failed/);
    expect(msgs()).toEqual(['garbage collection failed', 'reclaimed leftovers']);
    expect(lines[0]).toMatchObject({ level: 'warn', cron: '*/30 * * * *', error: 'Error: index unreachable' });
  });
});
