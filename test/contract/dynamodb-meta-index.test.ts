import { afterAll, beforeAll } from 'vitest';
import { DynamoMetaIndex } from '../../src/adapters/dynamodb/meta-index.js';
import { startDynalite, type Dynalite } from '../support/dynalite.js';
import { metaIndexContract } from './meta-index.contract.js';

let server: Dynalite;
let tables = 0;

beforeAll(async () => {
  server = await startDynalite();
});
afterAll(async () => {
  await server?.stop();
});

metaIndexContract('DynamoMetaIndex on dynalite (two clients, one table)', async (clock) => {
  const table = `outpost-contract-${++tables}`;
  await server.createTable(table);
  return {
    index: new DynamoMetaIndex({ client: server.client, table, clock }),
    // A second instance with its own client: another worker sharing the table.
    other: new DynamoMetaIndex({ client: server.client, table, clock }),
  };
});
