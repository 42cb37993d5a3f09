import { createDynamoClient } from '../adapters/dynamodb/client.js';
import { DynamoMetaIndex } from '../adapters/dynamodb/meta-index.js';
import { createS3Client } from '../adapters/s3/client.js';
import { S3BlobStore } from '../adapters/s3/blob-store.js';
import type { Clock } from '../ports/clock.js';
import type { DynamoConfig, S3Config } from './config.js';

/** The cloud adapters (S3 + DynamoDB) from validated configuration, for Node and Workers alike. */
export function cloudAdapters(config: { s3: S3Config; dynamodb: DynamoConfig }, clock: Clock) {
  const { s3, dynamodb } = config;
  return {
    store: new S3BlobStore({ client: createS3Client(s3), bucket: s3.bucket, prefix: s3.prefix, partBytes: s3.partBytes }),
    index: new DynamoMetaIndex({ client: createDynamoClient(dynamodb), table: dynamodb.table, clock }),
  };
}
