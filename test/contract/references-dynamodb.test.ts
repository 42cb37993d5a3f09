import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { afterAll, beforeAll } from 'vitest';
import { DynamoMetaIndex } from '../../src/adapters/dynamodb/meta-index.js';
import { startDynalite, type Dynalite } from '../support/dynalite.js';
import { replyLosingClient } from './dynamodb-fixture.js';
import type { LossMode, LossyIndex } from './references-fixture.js';
import { referencesContract } from './references.contract.js';

/**
 * The reference protocol on DynamoDB (dynalite, as test/contract/dynamodb-meta-index.test.ts
 * runs the MetaIndex contract), with replies lost in the client after the table applied an
 * UpdateItem: thrown as a timeout, or re-sent first as the SDK's retry does.
 */
let server: Dynalite;
let tables = 0;

beforeAll(async () => {
  server = await startDynalite();
});
afterAll(async () => {
  await server?.stop();
});

referencesContract('DynamoMetaIndex on dynalite', async (clock) => {
  const table = `outpost-refs-${++tables}`;
  await server.createTable(table);
  return {
    index: new DynamoMetaIndex({ client: server.client, table, clock }),
    lossy: (mode) => losingReplies((client) => new DynamoMetaIndex({ client, table, clock }), mode),
  };
});

function losingReplies(make: (client: DynamoDBClient) => DynamoMetaIndex, mode: LossMode): LossyIndex {
  const lossy = replyLosingClient(server.client, mode === 'resend');
  return { index: make(lossy.client), loseReply: lossy.loseReply };
}
