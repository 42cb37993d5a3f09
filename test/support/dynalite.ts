import { CreateTableCommand, DescribeTableCommand, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { setTimeout as sleep } from 'node:timers/promises';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';

/**
 * dynalite (a DynamoDB-compatible server in Node) on loopback, in memory. It speaks the real
 * wire protocol with conditional writes and ADD counters, but has no transactions and never
 * expires TTL items, which is exactly what the MetaIndex must not rely on anyway.
 */
const dynalite = createRequire(import.meta.url)('dynalite') as (options: Record<string, unknown>) => import('node:http').Server;

export interface Dynalite {
  endpoint: string;
  client: DynamoDBClient;
  /** Creates a table with the MetaIndex key schema (src/adapters/dynamodb/schema.md), and waits until it is ACTIVE. */
  createTable(name: string): Promise<void>;
  stop(): Promise<void>;
}

export async function startDynalite(): Promise<Dynalite> {
  const server = dynalite({ createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    ...dynamoTables(endpoint),
    async stop() {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A client for a DynamoDB endpoint and a helper that creates MetaIndex tables there. */
export function dynamoTables(endpoint: string): Omit<Dynalite, 'stop'> {
  const client = new DynamoDBClient({
    endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
  });
  return {
    endpoint,
    client,
    async createTable(name) {
      await client.send(
        new CreateTableCommand({
          TableName: name,
          BillingMode: 'PAY_PER_REQUEST',
          AttributeDefinitions: [
            { AttributeName: 'pk', AttributeType: 'S' },
            { AttributeName: 'sk', AttributeType: 'S' },
          ],
          KeySchema: [
            { AttributeName: 'pk', KeyType: 'HASH' },
            { AttributeName: 'sk', KeyType: 'RANGE' },
          ],
        }),
      );
      // dynalite answers CREATING and turns the table ACTIVE a timer tick later; until then
      // every item request fails with ResourceNotFoundException (on a busy machine, the first).
      for (;;) {
        const { Table } = await client.send(new DescribeTableCommand({ TableName: name }));
        if (Table?.TableStatus === 'ACTIVE') return;
        await sleep(5);
      }
    },
  };
}
