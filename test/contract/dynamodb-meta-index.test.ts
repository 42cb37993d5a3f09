import { DeleteItemCommand, GetItemCommand, UpdateItemCommand, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DynamoMetaIndex } from '../../src/adapters/dynamodb/meta-index.js';
import { TestClock } from '../support/clock.js';
import { startDynalite, type Dynalite } from '../support/dynalite.js';
import { replyLosingClient } from './dynamodb-fixture.js';
import { acquired, key, refusedBy, TTL, type LossyIndex } from './meta-index-fixture.js';
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
    // Replies lost inside a method, after one UpdateItem of it was applied.
    lossy: losingReplies((client) => new DynamoMetaIndex({ client, table, clock })),
  };
});

/** An instance whose client, once armed, loses the reply of the next UpdateItem the table applied (dynamodb-fixture.ts). */
function losingReplies(make: (client: DynamoDBClient) => DynamoMetaIndex, options: { resend?: boolean } = {}): LossyIndex {
  const lossy = replyLosingClient(server.client, options.resend ?? false);
  return { index: make(lossy.client), loseNextReply: () => lossy.loseReply(1) };
}

/** A fresh table and an index on it. */
async function freshIndex(name: string, clock = new TestClock()) {
  const table = `outpost-${name}-${++tables}`;
  await server.createTable(table);
  return { clock, table, index: new DynamoMetaIndex({ client: server.client, table, clock }) };
}

/**
 * DynamoDB's TTL sweep erases an item for good, no sooner than a week after its `ttl` (which
 * the adapter sets a week past expiry). dynalite never sweeps, so the test erases the item
 * with a DeleteItem straight to the table once the clock is past that.
 */
describe('DynamoMetaIndex lease items erased by the TTL sweep', () => {
  const WEEK = 7 * 24 * 3600 * 1000;
  const lk = key('lease', 'leases');

  const rawKey = { pk: { S: lk.pk }, sk: { S: lk.sk } };

  async function erase(table: string) {
    await server.client.send(new DeleteItemCommand({ TableName: table, Key: rawKey }));
  }

  it('issues a larger token than any before, from the clock, when the item is gone', async () => {
    const { clock, table, index } = await freshIndex('swept');
    // Four holders within one millisecond: the last token is ahead of the clock.
    let last = 0;
    for (const owner of ['A', 'B', 'C', 'D']) {
      const lease = acquired(await index.acquireLease(lk, owner, TTL));
      await index.releaseLease(lease, `${owner} was here`);
      last = lease.token;
    }
    expect(last).toBe(clock.now() + 3);
    clock.advance(2 * WEEK + 1);
    await erase(table);
    expect(await index.readLease(lk)).toBeUndefined();
    const next = await index.acquireLease(lk, 'E', TTL);
    expect(next).toEqual({ acquired: true, lease: { key: lk, owner: 'E', token: clock.now(), expiresAt: clock.now() + TTL } });
    expect(acquired(next).token).toBeGreaterThan(last);
  });

  it('keeps tokens growing when a tombstone is swept too', async () => {
    const { clock, table, index } = await freshIndex('swept-tombstone');
    const a = acquired(await index.acquireLease(lk, 'A', TTL));
    await index.delete(lk);
    clock.advance(WEEK + TTL + 1);
    await erase(table);
    expect(acquired(await index.acquireLease(lk, 'B', TTL)).token).toBeGreaterThan(a.token);
  });

  it('gives lease items a ttl no earlier than a week after their expiry', async () => {
    const { clock, table, index } = await freshIndex('ttl');
    const a = acquired(await index.acquireLease(lk, 'A', TTL));
    await index.releaseLease(a, 'done');
    const raw = await server.client.send(new GetItemCommand({ TableName: table, Key: rawKey, ConsistentRead: true }));
    expect(Number(raw.Item!.ttl!.N) * 1000).toBeGreaterThanOrEqual(clock.now() + WEEK - 1000);
    expect(raw.Item!.st).toEqual({ S: '"done"' });
  });
});

/**
 * The SDK re-sends a request whose reply timed out, so the table can see one write twice
 * before the adapter hears anything: the second send is then judged against the first's result.
 */
describe('DynamoMetaIndex lease writes re-sent after a lost reply', () => {
  const lk = key('lease', 'leases');
  async function resending() {
    const { clock, table } = await freshIndex('resend');
    const plain = new DynamoMetaIndex({ client: server.client, table, clock });
    return { clock, plain, lossy: losingReplies((client) => new DynamoMetaIndex({ client, table, clock }), { resend: true }) };
  }

  it('acquireLease: the re-sent take is refused by its own holding, which is then extended', async () => {
    const { plain, lossy } = await resending();
    lossy.loseNextReply();
    const a = acquired(await lossy.index.acquireLease(lk, 'A', TTL));
    expect(await plain.readLease(lk)).toEqual({ token: a.token, holder: 'A', expiresAt: a.expiresAt });
    expect(await plain.acquireLease(lk, 'B', TTL)).toEqual(refusedBy(a));
  });

  it('updateLease: the re-sent write applies again, the same state', async () => {
    const { plain, lossy } = await resending();
    const a = acquired(await plain.acquireLease(lk, 'A', TTL));
    lossy.loseNextReply();
    expect(await lossy.index.updateLease(a, { parts: 1 }, TTL)).toEqual(a);
    expect((await plain.readLease(lk))?.state).toEqual({ parts: 1 });
  });

  it('releaseLease: the re-sent write finds the lease given up and answers false; the state is written', async () => {
    const { plain, lossy } = await resending();
    const a = acquired(await plain.acquireLease(lk, 'A', TTL));
    lossy.loseNextReply();
    expect(await lossy.index.releaseLease(a, { done: true })).toBe(false);
    expect(await plain.readLease(lk)).toMatchObject({ token: a.token, state: { done: true } });
    expect((await plain.readLease(lk))?.holder).toBeUndefined();
  });
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
    // Each churning owner took it at a later clock, so B's token is the clock's now.
    expect(b).toMatchObject({ owner: 'B', token: clock.now(), expiresAt: clock.now() + TTL });
    expect(await plain.get(lk)).toMatchObject({ value: { owner: 'B', token: clock.now() } });
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

/** Expired and deleted items are filtered after DynamoDB applies a Query's Limit. */
describe('DynamoMetaIndex list past many expired or deleted items', () => {
  it('finds the live item behind 250 deleted ones in a few Queries, not one Query per item, and returns at most limit', async () => {
    const { table, clock } = await freshIndex('list-past-deleted');
    const plain = new DynamoMetaIndex({ client: server.client, table, clock });
    for (let i = 0; i < 250; i++) {
      await plain.put(key(`a${String(i).padStart(4, '0')}`), i);
      await plain.delete(key(`a${String(i).padStart(4, '0')}`));
    }
    await plain.put(key('b1'), 'live');
    await plain.put(key('b2'), 'live too');
    let queries = 0;
    const counting = {
      send: (command: unknown) => {
        if ((command as { constructor: { name: string } }).constructor.name === 'QueryCommand') queries++;
        return server.client.send(command as UpdateItemCommand);
      },
    } as unknown as DynamoDBClient;
    const index = new DynamoMetaIndex({ client: counting, table, clock });
    expect((await index.list('p', { limit: 1 })).map((e) => e.sk)).toEqual(['b1']);
    expect(queries).toBeLessThanOrEqual(3);
    expect((await index.list('p', { limit: 1, after: 'b1' })).map((e) => e.sk)).toEqual(['b2']);
  });
});
