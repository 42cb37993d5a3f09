import { defineConfig } from 'vitest/config';

/**
 * Three projects: `unit` (ports' contract suites, HTTP tests through app.request(), pure core
 * tests), `e2e` (real processes and real clients on loopback: skopeo, Outpost on Node and on
 * `wrangler dev`, several instances on one store) and `workerd` (the Workers entry and its
 * tests inside workerd, configured in test/workerd/vitest.config.ts).
 */
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts', 'test/contract/**/*.test.ts', 'test/http/**/*.test.ts', 'test/infra/**/*.test.ts'],
          // Contract runs against a real S3 server belong to e2e, which starts one.
          exclude: ['test/contract/s3-*.test.ts'],
          testTimeout: 20_000,
        },
      },
      {
        test: {
          name: 'e2e',
          include: ['test/e2e/**/*.test.ts', 'test/contract/s3-*.test.ts'],
          testTimeout: 180_000,
          hookTimeout: 300_000,
          // Real peers for the run: skopeo and a build (global-setup), a Ceph RGW as S3, dynalite as DynamoDB.
          globalSetup: ['test/e2e/global-setup.ts', 'test/support/s3-global-setup.ts', 'test/support/dynamodb-global-setup.ts'],
          // e2e files start servers and clients; run them one at a time on a 2-core machine.
          fileParallelism: false,
        },
      },
      // `workerd`: the Worker and its tests inside workerd (Miniflare), over real S3 and DynamoDB.
      'test/workerd/vitest.config.ts',
    ],
  },
});
