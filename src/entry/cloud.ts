import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { S3Client } from '@aws-sdk/client-s3';
import { DynamoMetaIndex } from '../adapters/dynamodb/meta-index.js';
import { S3BlobStore } from '../adapters/s3/blob-store.js';
import type { Clock } from '../ports/clock.js';
import type { DynamoConfig, S3Config } from './config.js';

/** The cloud adapters (S3 + DynamoDB) from validated configuration, for Node and Workers alike. */
export function cloudAdapters(config: { s3: S3Config; dynamodb: DynamoConfig }, clock: Clock) {
  const s3 = new S3Client({
    endpoint: config.s3.endpoint,
    region: config.s3.region,
    forcePathStyle: config.s3.forcePathStyle,
    credentials: keys(config.s3),
    // The default aws-chunked checksum trailer is stored inside the object by some S3-compatible
    // servers and refused by others; checksums are only sent where an API requires them.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
  const dynamodb = new DynamoDBClient({
    endpoint: config.dynamodb.endpoint,
    region: config.dynamodb.region,
    credentials: keys(config.dynamodb),
  });
  return {
    store: new S3BlobStore({ client: s3, bucket: config.s3.bucket, prefix: config.s3.prefix, partBytes: config.s3.partBytes }),
    index: new DynamoMetaIndex({ client: dynamodb, table: config.dynamodb.table, clock }),
  };
}

function keys(c: { accessKeyId?: string; secretAccessKey?: string }) {
  return c.accessKeyId && c.secretAccessKey ? { accessKeyId: c.accessKeyId, secretAccessKey: c.secretAccessKey } : undefined;
}
