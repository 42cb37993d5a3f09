import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, it } from 'vitest';
import { nodeHash } from '../../src/adapters/crypto/node-hash.js';
import { FsBlobStore } from '../../src/adapters/local/fs-blob-store.js';
import { SqliteMetaIndex } from '../../src/adapters/local/sqlite-meta-index.js';
import { MemoryBlobStore } from '../../src/adapters/memory/blob-store.js';
import { MemoryMetaIndex } from '../../src/adapters/memory/meta-index.js';
import { createRegistry } from '../../src/core/registry/registry.js';
import { nodeConnection } from '../../src/entry/node-server.js';
import { createApp } from '../../src/http/app.js';
import type { BlobStore } from '../../src/ports/blob-store.js';
import type { MetaIndex } from '../../src/ports/meta-index.js';
import { TestClock } from '../support/clock.js';
import { runFuzz, type FuzzSubject } from '../support/fuzz-run.js';
import { image } from '../support/images.js';
import { mirrorTest } from '../support/mirror.js';

/**
 * A bounded fuzz test of the HTTP surface (issue 7): seeded random and mutated paths, methods,
 * headers, queries, bodies, manifests and digests, aimed at a registry that holds known content.
 * Every answer must be a well-formed OCI success or error, a client's fault a fitting 4xx, never
 * a 5xx and never a hang; a refused request changes nothing stored; known content stays
 * byte-identical. FUZZ_ITERATIONS runs longer, FUZZ_SEED replays a run (the seed of a failure is
 * in its message).
 */

const ITERATIONS = Number(process.env.FUZZ_ITERATIONS ?? 1500);

// nodeConnection: the fuzzer sends each target as sent beside the resolved URL, as Node's adapter does.
const hostedApp = (store: BlobStore) => (index: MetaIndex) =>
  createApp({ registry: createRegistry({ store, index, hash: nodeHash, clock: new TestClock() }), connection: nodeConnection });

/**
 * Coordination items (leases of fills and manifest fetches) may change on a refused mirror
 * request: a fetch whose upstream answered 404 releases its lease with that answer, so that
 * waiting requests learn it. They are not content; everything else must stay as it was.
 */
const COORDINATION = /^(fill|mfetch)$/;

const work = mkdtempSync(join(tmpdir(), 'outpost-fuzz-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const subjects: Array<[string, () => FuzzSubject, number]> = [
  [
    'memory adapters',
    () => {
      const store = new MemoryBlobStore();
      return { index: new MemoryMetaIndex(new TestClock()), store, app: hostedApp(store) };
    },
    ITERATIONS,
  ],
  [
    'the embedded store (files + SQLite)',
    () => {
      const dir = mkdtempSync(join(work, 'local-'));
      // The index beside the store's directory, not in it, so that listing the store lists blobs only.
      const sqlite = new SqliteMetaIndex(`${dir}.db`, new TestClock());
      const store = new FsBlobStore(dir);
      return { index: sqlite, store, app: hostedApp(store), close: () => sqlite.close() };
    },
    Math.ceil(ITERATIONS / 3),
  ],
  [
    'a mirror of a scripted upstream beside hosted repositories',
    () => {
      const store = new MemoryBlobStore();
      const index = new MemoryMetaIndex(new TestClock());
      return {
        index,
        store,
        names: ['registry.test/library/app', 'registry.test/library/none'],
        coordination: COORDINATION,
        app: (journalled) => {
          const t = mirrorTest({ store, index: journalled, hosted: ['known', 'other', 'new'], connection: nodeConnection });
          t.up.addImage('library/app', 'v1', image({ layers: [5000] }));
          return t.instances[0]!.app;
        },
      };
    },
    Math.ceil(ITERATIONS / 3),
  ],
];

describe.each(subjects)('fuzzing the HTTP surface on %s', (_, make, iterations) => {
  it(`${iterations} seeded requests: never a 5xx or a hang, refusals change nothing, known content intact`, { timeout: 300_000 }, async () => {
    await runFuzz(make(), iterations);
  });
});
