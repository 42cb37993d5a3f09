import type { TestProject } from 'vitest/node';
import { startS3, type S3ServerInfo } from './s3-server.js';

/**
 * vitest globalSetup: one S3 server (scripts/ceph-s3.sh) for a whole project run. Add
 * 'test/support/s3-global-setup.ts' to a project's globalSetup, then in a test:
 *   const s3 = inject('s3'); // { endpoint, accessKeyId, secretAccessKey, region }
 * Use a bucket of its own per test file: the server is shared.
 */

declare module 'vitest' {
  export interface ProvidedContext {
    s3: S3ServerInfo;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const s3 = await startS3();
  project.provide('s3', {
    endpoint: s3.endpoint,
    accessKeyId: s3.accessKeyId,
    secretAccessKey: s3.secretAccessKey,
    region: s3.region,
  });
  return () => s3.stop();
}
