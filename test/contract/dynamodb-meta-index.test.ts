import { GetItemCommand, UpdateItemCommand, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DynamoMetaIndex } from '../../src/adapters/dynamodb/meta-index.js';
import { TestClock } from '../support/clock.js';
import { startDynalite, type Dynalite } from '../support/dynalite.js';
import { acquired, key, refusedBy, TTL } from './meta-index-fixture.js';
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

/**
 * acquireLease takes a lease in one conditional write and learns who refused it from the item
 * as it was then (or a read right after). Here the lease changes hands in exactly that gap:
 * before each of B's takes another owner grabs the free lease, and right after the refusal the
 * clock passes that owner's expiry, so B always finds the lease free again when it looks.
 */
describe('DynamoMetaIndex acquireLease under churn', () => {
  async function churn(rounds: number) {
    const clock = new TestClock();
    const table = `outpost-churn-${++tables}`;
    await server.createTable(table);
    const plain = new DynamoMetaIndex({ client: server.client, table, clock });
    const lk = key('lease', 'leases');
    let left = rounds;
    const client = {
      async send(command: unknown) {
        const take = command instanceof UpdateItemCommand && command.input.ExpressionAttributeValues?.[':s0']?.S === 'B';
        if (take && left > 0) acquired(await plain.acquireLease(lk, `churn-${left}`, TTL));
        try {
          return await server.client.send(command as UpdateItemCommand);
        } catch (err) {
          if (take && left > 0) {
            left--;
            clock.advance(TTL);
          }
          throw err;
        }
      },
    } as unknown as DynamoDBClient;
    return { clock, plain, lk, index: new DynamoMetaIndex({ client, table, clock }) };
  }

  it('keeps trying while it finds the lease free, and takes it', async () => {
    const { clock, plain, lk, index } = await churn(4);
    const b = acquired(await index.acquireLease(lk, 'B', TTL));
    expect(b).toMatchObject({ owner: 'B', token: 5, expiresAt: clock.now() + TTL });
    expect(await plain.get(lk)).toMatchObject({ value: { owner: 'B', token: 5 } });
  });

  it('fails rather than report a holder whose lease has expired when the churn never ends', async () => {
    const { clock, lk, index } = await churn(Infinity);
    await expect(index.acquireLease(lk, 'B', TTL)).rejects.toThrow(/kept changing hands/);
    const last = await index.get(lk);
    expect(last === undefined || (last.expiresAt ?? 0) <= clock.now()).toBe(true);
  });
});

/**
 * DynamoDB returns the refusing item with ConditionalCheckFailedException when asked
 * (ReturnValuesOnConditionCheckFailure: ALL_OLD); dynalite accepts the parameter but returns
 * nothing, so the contract above runs the adapter's fallback read. This client adds the item
 * the way DynamoDB does, to run the other path.
 */
describe('DynamoMetaIndex acquireLease with the refusing item returned (ALL_OLD)', () => {
  it('names the holder from the refusal itself, without reading again', async () => {
    const clock = new TestClock();
    const table = `outpost-all-old-${++tables}`;
    await server.createTable(table);
    const sent: string[] = [];
    const client = {
      async send(command: UpdateItemCommand | GetItemCommand) {
        sent.push(command.constructor.name);
        try {
          return await server.client.send(command as UpdateItemCommand);
        } catch (err) {
          if (command instanceof UpdateItemCommand && command.input.ReturnValuesOnConditionCheckFailure === 'ALL_OLD') {
            const old = await server.client.send(new GetItemCommand({ TableName: table, Key: command.input.Key, ConsistentRead: true }));
            Object.assign(err as object, { Item: old.Item });
          }
          throw err;
        }
      },
    } as unknown as DynamoDBClient;
    const index = new DynamoMetaIndex({ client, table, clock });
    const lk = key('lease', 'leases');
    const a = acquired(await index.acquireLease(lk, 'A', TTL));
    sent.length = 0;
    expect(await index.acquireLease(lk, 'B', TTL)).toEqual(refusedBy(a));
    expect(sent).toEqual(['UpdateItemCommand']);
    // The holder's retry: the take is refused with its own holding, which it then extends.
    clock.advance(1_000);
    sent.length = 0;
    expect(await index.acquireLease(lk, 'A', TTL)).toEqual({ acquired: true, lease: { ...a, expiresAt: clock.now() + TTL } });
    expect(sent).toEqual(['UpdateItemCommand', 'UpdateItemCommand']);
  });
});
