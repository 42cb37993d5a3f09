import { join } from 'node:path';
import { freshCloudStore } from './cloud-store.js';
import { startOutpost, startOutpostCloud, type OutpostProcess } from './server.js';
import { startWorker } from './worker.js';

/**
 * The ways Outpost runs, as the e2e suites (test/e2e/suites/) see them: each starts one
 * Outpost on a store of its own, and the suites run unchanged against all of them.
 */
export interface Target {
  /** Shown in test names. */
  name: string;
  /**
   * Starts an Outpost on an empty store. `work` is a scratch directory the caller owns and
   * removes; `label` names the suite, so its bucket and table can be told apart.
   */
  start(work: string, label: string): Promise<OutpostProcess>;
  /** The Authorization header the suites send on every request, for a target with `auth:` configured. */
  authorization?: string;
}

export const LOCAL_NODE: Target = {
  name: 'Node on the local store',
  start: (work) => startOutpost(join(work, 'data')),
};

export const CLOUD_NODE: Target = {
  name: 'Node on S3 + DynamoDB',
  start: async (_work, label) => startOutpostCloud(await freshCloudStore(`${label}-node`)),
};

export const CLOUD_WORKER: Target = {
  name: 'workerd (wrangler dev) on S3 + DynamoDB',
  start: async (_work, label) => startWorker(await freshCloudStore(`${label}-workerd`)),
};

export const TARGETS: readonly Target[] = [LOCAL_NODE, CLOUD_NODE, CLOUD_WORKER];
