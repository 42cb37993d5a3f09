import { cloudflareTest } from '@cloudflare/vitest-pool-workers';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { unstable_readConfig } from 'wrangler';
import { defineProject } from 'vitest/config';

/**
 * The `workerd` project: test files run inside workerd (Miniflare) next to the Worker that
 * wrangler.toml describes, and reach it through `exports.default` from 'cloudflare:workers'.
 * The real S3 (Ceph RGW) and DynamoDB (dynalite) servers run in Node on loopback, started by
 * the globalSetups; their endpoints, keys and this run's bucket and table reach the Worker as
 * Miniflare bindings, over the wrangler.toml [vars] they override. workerd's fetch may call
 * 127.0.0.1, so the Worker talks to them as it would to AWS. Each test file gets a module
 * graph of its own, so the app src/entry/workers.ts builds once per isolate is built per file.
 */
const root = resolve(fileURLToPath(import.meta.url), '../../..');
const wranglerConfig = resolve(root, 'wrangler.toml');

export default defineProject({
  plugins: [
    cloudflareTest(({ inject }) => {
      const s3 = inject('s3');
      const dynamodb = inject('dynamodb');
      const { bucket, table } = inject('workerdStore');
      return {
        wrangler: { configPath: wranglerConfig },
        // Nothing in wrangler.toml is remote; never ask Cloudflare for a proxy session.
        remoteBindings: false,
        miniflare: {
          bindings: {
            OUTPOST_S3_ENDPOINT: s3.endpoint,
            OUTPOST_S3_REGION: s3.region,
            OUTPOST_S3_BUCKET: bucket,
            OUTPOST_S3_ACCESS_KEY_ID: s3.accessKeyId,
            OUTPOST_S3_SECRET_ACCESS_KEY: s3.secretAccessKey,
            OUTPOST_DYNAMODB_ENDPOINT: dynamodb.endpoint,
            OUTPOST_DYNAMODB_TABLE: table,
            // No OUTPOST_DYNAMODB_* keys: they default to the S3 ones, which dynalite accepts.
          },
        },
      };
    }),
  ],
  resolve: {
    // Vite resolves the test's module graph, not wrangler's bundler: apply wrangler.toml's
    // [alias] here too, so the Worker under test loads the modules a deployment would.
    alias: aliases(),
  },
  test: {
    name: 'workerd',
    // Paths below are the repository's; a project config's root is otherwise its own folder.
    root,
    include: ['test/workerd/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 300_000,
    globalSetup: ['test/support/s3-global-setup.ts', 'test/support/dynamodb-global-setup.ts', 'test/workerd/global-setup.ts'],
  },
});

function aliases(): Record<string, string> {
  const alias: Record<string, string> = unstable_readConfig({ config: wranglerConfig }).alias ?? {};
  return Object.fromEntries(Object.entries(alias).map(([from, to]) => [from, to.startsWith('.') ? resolve(root, to) : to]));
}
