import { CreateBucketCommand } from '@aws-sdk/client-s3';
import { randomUUID } from 'node:crypto';
import { inject } from 'vitest';
import { createS3Client } from '../../../src/adapters/s3/client.js';
import { dynamoTables } from '../../support/dynalite.js';
import type { S3ServerInfo } from '../../support/s3-server.js';

/**
 * The cloud store of an e2e test: a bucket on the project's S3 server (Ceph RGW) and a table on
 * its DynamoDB (dynalite), both started once per run by the e2e globalSetup. Each test file
 * makes fresh ones, so files never see each other's content.
 */

export interface CloudStore {
  s3: S3ServerInfo;
  dynamodb: { endpoint: string };
  bucket: string;
  table: string;
  /** Key prefix inside the bucket. */
  prefix?: string;
}

/** A new, empty bucket and MetaIndex table, named after `label` plus a random suffix. */
export async function freshCloudStore(label: string): Promise<CloudStore> {
  const s3 = inject('s3');
  const dynamodb = inject('dynamodb');
  // Bucket names: 3-63 characters of lower-case letters, digits and hyphens.
  const name = `${label.toLowerCase().replace(/[^a-z0-9-]+/g, '-').slice(0, 40)}-${randomUUID().slice(0, 8)}`;
  const client = createS3Client({ ...s3, forcePathStyle: true });
  try {
    await client.send(new CreateBucketCommand({ Bucket: name }));
  } finally {
    client.destroy();
  }
  const tables = dynamoTables(dynamodb.endpoint);
  try {
    await tables.createTable(name);
  } finally {
    tables.client.destroy();
  }
  return { s3, dynamodb, bucket: name, table: name };
}

/** S3's smallest part: blobs of a few MiB, as the suites push, then take the multipart path. */
const PART_BYTES = 5 * 1024 * 1024;

/**
 * The OUTPOST_* settings that point an Outpost (Node or Workers) at `store`. The two S3 keys
 * are the secrets; DynamoDB uses the same keys (dynalite accepts any).
 */
export function cloudEnv(store: CloudStore): Record<string, string> {
  return {
    OUTPOST_STORE: 'cloud',
    OUTPOST_S3_ENDPOINT: store.s3.endpoint,
    OUTPOST_S3_REGION: store.s3.region,
    OUTPOST_S3_BUCKET: store.bucket,
    ...(store.prefix ? { OUTPOST_S3_PREFIX: store.prefix } : {}),
    OUTPOST_S3_FORCE_PATH_STYLE: 'true',
    OUTPOST_S3_ACCESS_KEY_ID: store.s3.accessKeyId,
    OUTPOST_S3_SECRET_ACCESS_KEY: store.s3.secretAccessKey,
    OUTPOST_S3_PART_BYTES: String(PART_BYTES),
    OUTPOST_DYNAMODB_ENDPOINT: store.dynamodb.endpoint,
    OUTPOST_DYNAMODB_REGION: 'us-east-1',
    OUTPOST_DYNAMODB_TABLE: store.table,
  };
}
