import type { S3Client } from '@aws-sdk/client-s3';
import { env } from 'cloudflare:workers';
import { createS3Client } from '../../src/adapters/s3/client.js';

/**
 * The S3 server the project's bindings name (test/workerd/vitest.config.ts), for tests that
 * look at the store directly, from workerd too, rather than through the Worker.
 */
export function bindingsS3(): S3Client {
  return createS3Client({
    endpoint: String(env.OUTPOST_S3_ENDPOINT),
    region: String(env.OUTPOST_S3_REGION),
    forcePathStyle: true,
    accessKeyId: String(env.OUTPOST_S3_ACCESS_KEY_ID),
    secretAccessKey: String(env.OUTPOST_S3_SECRET_ACCESS_KEY),
  });
}
