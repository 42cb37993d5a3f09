import { CreateBucketCommand } from '@aws-sdk/client-s3';
import { randomUUID } from 'node:crypto';
import type { TestProject } from 'vitest/node';
import { createS3Client } from '../../src/adapters/s3/client.js';
import { dynamoTables } from '../support/dynalite.js';

/**
 * vitest globalSetup for the `workerd` project, listed after s3-global-setup.ts and
 * dynamodb-global-setup.ts: makes a fresh bucket and index table on those servers for this
 * run. The project config (test/workerd/vitest.config.ts) turns servers, bucket and table into
 * the Worker's OUTPOST_* bindings; the Worker itself runs inside workerd, which cannot start
 * servers or reach the SDKs' Node code paths. Test files share the bucket and table, so each
 * uses repositories of its own.
 *
 * A second pair, `workerdGcStore`, is for gc.test.ts alone: a collection run with its clock
 * past the grace would take the content other files have just pushed and not yet named.
 */
declare module 'vitest' {
  export interface ProvidedContext {
    workerdStore: WorkerdStore;
    workerdGcStore: WorkerdStore;
  }
}

interface WorkerdStore {
  bucket: string;
  table: string;
}

export default async function setup(project: TestProject): Promise<void> {
  const { s3, dynamodb } = project.getProvidedContext();
  if (!s3 || !dynamodb) throw new Error('list s3-global-setup.ts and dynamodb-global-setup.ts before this globalSetup');
  const client = createS3Client({ ...s3, forcePathStyle: true });
  const tables = dynamoTables(dynamodb.endpoint);
  const make = async (name: string): Promise<WorkerdStore> => {
    await client.send(new CreateBucketCommand({ Bucket: name }));
    await tables.createTable(name);
    return { bucket: name, table: name };
  };
  const id = randomUUID().slice(0, 8);
  project.provide('workerdStore', await make(`outpost-workerd-${id}`));
  project.provide('workerdGcStore', await make(`outpost-workerd-gc-${id}`));
}
