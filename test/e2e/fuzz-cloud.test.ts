import { describe, it } from 'vitest';
import { nodeHash } from '../../src/adapters/crypto/node-hash.js';
import { createRegistry } from '../../src/core/registry/registry.js';
import { cloudAdapters } from '../../src/entry/cloud.js';
import { readConfig } from '../../src/entry/config.js';
import { nodeConnection } from '../../src/entry/node-server.js';
import { createApp } from '../../src/http/app.js';
import { systemClock } from '../../src/ports/clock.js';
import type { MetaIndex } from '../../src/ports/meta-index.js';
import { runFuzz } from '../support/fuzz-run.js';
import { cloudEnv, freshCloudStore } from './support/cloud-store.js';

/**
 * The fuzz test of test/http/fuzz.test.ts on the cloud adapters: S3 (Ceph RGW) and DynamoDB
 * (dynalite), where keys, conditional writes and error answers come from real servers. Shorter:
 * every request is several round trips. FUZZ_ITERATIONS runs longer.
 */

const ITERATIONS = Math.ceil(Number(process.env.FUZZ_ITERATIONS ?? 1500) / 8);

describe('fuzzing the HTTP surface on S3 + DynamoDB', () => {
  it(`${ITERATIONS} seeded requests: never a 5xx or a hang, refusals change nothing, known content intact`, { timeout: 300_000 }, async () => {
    const config = readConfig(cloudEnv(await freshCloudStore('fuzz')));
    if (config.store.kind !== 'cloud') throw new Error('not the cloud store');
    const { store, index } = cloudAdapters(config.store, systemClock);
    const app = (journalled: MetaIndex) => createApp({ registry: createRegistry({ store, index: journalled, hash: nodeHash, clock: systemClock }), connection: nodeConnection });
    await runFuzz({ store, index, app }, ITERATIONS);
  });
});
