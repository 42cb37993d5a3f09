import {
  ConditionalCheckFailedException,
  DynamoDBClient,
  GetItemCommand,
  QueryCommand,
  UpdateItemCommand,
  type AttributeValue,
} from '@aws-sdk/client-dynamodb';
import { systemClock, type Clock } from '../../ports/clock.js';
import {
  MAX_LIST_LIMIT,
  type Item,
  type ItemKey,
  type Json,
  type Lease,
  type LeaseResult,
  type LeaseView,
  type ListOptions,
  type MetaIndex,
  type WriteOptions,
} from '../../ports/meta-index.js';

/**
 * MetaIndex on one DynamoDB table (layout in ./schema.md). Each method is a single GetItem,
 * Query or conditional UpdateItem, so it needs neither transactions nor DynamoDB's TTL.
 */

/** Tombstones and expired items are left for DynamoDB's TTL sweep this long after expiry. */
const HOUSEKEEPING_DELAY_S = 7 * 24 * 3600;

/**
 * acquireLease's writes before it gives up. It only tries again after seeing the lease free:
 * once when the stored token was ahead of this clock (the write asked for too small a token),
 * otherwise because it expired or was released between the refusal and the read, which needs
 * another holder to come and go in that gap; five such in a row is churn, not waiting.
 */
const LEASE_ATTEMPTS = 5;

type Av = Record<string, AttributeValue>;

export interface DynamoMetaIndexOptions {
  client: DynamoDBClient;
  table: string;
  clock?: Clock;
}

/** Items one list Query evaluates at least, expired ones included (see list). */
const MIN_EVALUATED = 100;

export class DynamoMetaIndex implements MetaIndex {
  private readonly client: DynamoDBClient;
  private readonly table: string;
  private readonly clock: Clock;

  constructor(options: DynamoMetaIndexOptions) {
    this.client = options.client;
    this.table = options.table;
    this.clock = options.clock ?? systemClock;
  }

  async get<T extends Json>(key: ItemKey): Promise<Item<T> | undefined> {
    const raw = await this.read(key);
    return raw && isLive(raw, this.clock.now()) ? toItem<T>(raw) : undefined;
  }

  async putIfAbsent(key: ItemKey, value: Json, options: WriteOptions = {}): Promise<boolean> {
    const now = this.clock.now();
    const written = await this.update(key, writeValue(value, options), {
      condition: 'attribute_not_exists(pk) OR (attribute_exists(#exp) AND #exp <= :now)',
      values: { ':now': num(now) },
    });
    return written !== undefined;
  }

  async put(key: ItemKey, value: Json, options: WriteOptions = {}): Promise<number> {
    const written = await this.update(key, writeValue(value, options));
    return Number(written!.ver!.N);
  }

  async compareAndSet(key: ItemKey, expectedVersion: number, value: Json, options: WriteOptions = {}) {
    const written = await this.update(key, writeValue(value, options), {
      condition: `#ver = :expected AND ${LIVE}`,
      values: { ':expected': num(expectedVersion), ':now': num(this.clock.now()) },
    });
    return written ? Number(written.ver!.N) : undefined;
  }

  async delete(key: ItemKey, expectedVersion?: number): Promise<boolean> {
    const now = this.clock.now();
    const written = await this.update(
      key,
      // The tombstone keeps `tok`, so the next lease here still gets a larger token.
      { set: { '#exp': num(-1), '#ttl': num(Math.floor(now / 1000) + HOUSEKEEPING_DELAY_S) }, remove: ['#v', '#n', '#owner', '#st'], bump: false },
      {
        condition: `attribute_exists(pk) AND ${LIVE}${expectedVersion === undefined ? '' : ' AND #ver = :expected'}`,
        values: { ':now': num(now), ...(expectedVersion === undefined ? {} : { ':expected': num(expectedVersion) }) },
      },
    );
    return written !== undefined;
  }

  async add(key: ItemKey, delta: number): Promise<number> {
    // Numbers live in the numeric attribute `n` (put() stores them there too), so a live counter
    // is one atomic ADD. An expired or deleted one restarts from 0 with a conditional SET. A lease
    // item (it has an `owner`, live or not) is never a counter.
    for (let attempt = 0; attempt < 3; attempt++) {
      const now = this.clock.now();
      const added = await this.update(
        key,
        { set: {}, add: { '#n': num(delta) }, remove: ['#exp', '#ttl'] },
        { condition: `attribute_not_exists(#v) AND attribute_not_exists(#owner) AND ${LIVE}`, values: { ':now': num(now) } },
      );
      if (added) return Number(added.n!.N);
      const restarted = await this.update(
        key,
        { set: { '#n': num(delta) }, remove: ['#v', '#exp', '#ttl'] },
        { condition: 'attribute_exists(#exp) AND #exp <= :now AND attribute_not_exists(#owner)', values: { ':now': num(now) } },
      );
      if (restarted) return delta;
      const raw = await this.read(key);
      if (raw && (raw.owner !== undefined || isLive(raw, this.clock.now()))) throw new TypeError(`item ${key.pk}/${key.sk} is not a counter`);
    }
    throw new Error(`item ${key.pk}/${key.sk} kept changing during add`);
  }

  async list<T extends Json>(pk: string, options: ListOptions): Promise<Array<{ sk: string; item: Item<T> }>> {
    const limit = Math.min(Math.max(1, options.limit), MAX_LIST_LIMIT);
    const now = this.clock.now();
    const out: Array<{ sk: string; item: Item<T> }> = [];
    let start: Av | undefined = options.after !== undefined ? keyOf({ pk, sk: options.after }) : undefined;
    // Expired items are filtered after DynamoDB applies Limit, so keep paging until the page is
    // full, and evaluate at least MIN_EVALUATED items a Query: with Limit 1, every expired or
    // deleted item ahead of a live one cost a Query of its own. Items past `limit` are dropped
    // (callers continue with `after`, never with DynamoDB's key).
    do {
      const page = await this.client.send(
        new QueryCommand({
          TableName: this.table,
          ConsistentRead: true,
          KeyConditionExpression: options.prefix === undefined ? 'pk = :pk' : 'pk = :pk AND begins_with(sk, :prefix)',
          FilterExpression: 'attribute_not_exists(#exp) OR #exp > :now',
          ExpressionAttributeNames: { '#exp': 'exp' },
          ExpressionAttributeValues: {
            ':pk': { S: pk },
            ':now': num(now),
            ...(options.prefix === undefined ? {} : { ':prefix': { S: options.prefix } }),
          },
          ExclusiveStartKey: start,
          Limit: Math.max(limit - out.length, MIN_EVALUATED),
        }),
      );
      for (const raw of page.Items ?? []) if (out.length < limit) out.push({ sk: raw.sk!.S!, item: toItem<T>(raw) });
      start = page.LastEvaluatedKey;
    } while (start && out.length < limit);
    return out;
  }

  async acquireLease(key: ItemKey, owner: string, ttlMs: number): Promise<LeaseResult> {
    // Per attempt one conditional write: take a free lease with a new token, or extend our own
    // holding as last seen. A refusal returns the item as it was (ALL_OLD; a consistent read
    // where the server does not return it): someone else live -> report them; free (it expired
    // or was released meanwhile, or its token is ahead of our clock) or ours -> write again.
    // A free lease is never reported as held.
    let seen: Av | undefined;
    for (let attempt = 0; attempt < LEASE_ATTEMPTS; attempt++) {
      const now = this.clock.now();
      const expiresAt = now + ttlMs;
      const mine = seen !== undefined && isLive(seen, now) && seen.owner?.S === owner;
      // max(previous + 1, now) from the item as last seen; the condition checks it still beats the
      // stored token. An item the TTL sweep erased leaves none, and every token it had is far
      // behind the clock (schema.md, "Tokens only grow").
      const token = mine ? Number(seen!.tok!.N) : Math.max(Number(seen?.tok?.N ?? 0) + 1, now);
      const result = mine
        ? await this.write(key, { set: leaseSet(owner, expiresAt) }, { ...heldBy({ owner, token }, now), returnOld: true })
        : await this.write(
            key,
            // `st` is left alone: the state the previous holders wrote passes to this one.
            { set: { ...leaseSet(owner, expiresAt), '#tok': num(token) }, remove: ['#v', '#n'] },
            {
              condition: '(attribute_not_exists(pk) OR #exp <= :now) AND (attribute_not_exists(#tok) OR #tok < :tok)',
              values: { ':now': num(now), ':tok': num(token) },
              returnOld: true,
            },
          );
      if (result.written) return withState({ acquired: true, lease: { key, owner, token, expiresAt } }, result.written);
      seen = result.old ?? (await this.read(key));
      if (seen === undefined || !isLive(seen, this.clock.now())) continue;
      if (seen.owner?.S === undefined || seen.tok?.N === undefined || seen.exp?.N === undefined) {
        throw new TypeError(`item ${key.pk}/${key.sk} is not a lease`);
      }
      if (seen.owner.S !== owner) {
        return withState({ acquired: false, holder: seen.owner.S, token: Number(seen.tok.N), expiresAt: Number(seen.exp.N) }, seen);
      }
    }
    throw new Error(`lease ${key.pk}/${key.sk} kept changing hands during acquireLease`);
  }

  async renewLease(lease: Lease, ttlMs: number): Promise<Lease | undefined> {
    const now = this.clock.now();
    const expiresAt = now + ttlMs;
    const written = await this.update(lease.key, { set: expirySet(expiresAt) }, heldBy(lease, now));
    return written ? { ...lease, expiresAt } : undefined;
  }

  async updateLease(lease: Lease, state: Json, ttlMs: number): Promise<Lease | undefined> {
    const now = this.clock.now();
    const expiresAt = now + ttlMs;
    const written = await this.update(lease.key, { set: { ...expirySet(expiresAt), '#st': { S: JSON.stringify(state) } } }, heldBy(lease, now));
    return written ? { ...lease, expiresAt } : undefined;
  }

  async releaseLease(lease: Lease, state?: Json): Promise<boolean> {
    // Expire rather than delete: the token and the state must survive for the next holder.
    const now = this.clock.now();
    const set = state === undefined ? expirySet(now) : { ...expirySet(now), '#st': { S: JSON.stringify(state) } };
    const written = await this.update(lease.key, { set }, heldBy(lease, now));
    return written !== undefined;
  }

  async readLease<S extends Json>(key: ItemKey): Promise<LeaseView<S> | undefined> {
    const raw = await this.read(key);
    if (!raw) return undefined;
    const live = isLive(raw, this.clock.now());
    if (raw.owner?.S === undefined) {
      if (live) throw new TypeError(`item ${key.pk}/${key.sk} is not a lease`);
      // Deleted or overwritten and expired: only the token is left of a lease, if there ever was one.
      return raw.tok?.N === undefined ? undefined : { token: Number(raw.tok.N), expiresAt: Number(raw.exp!.N) };
    }
    const view: LeaseView<S> = { token: Number(raw.tok!.N), expiresAt: Number(raw.exp!.N) };
    if (live) view.holder = raw.owner.S;
    if (raw.st?.S !== undefined) view.state = JSON.parse(raw.st.S) as S;
    return view;
  }

  /** The stored item, live or not (a strongly consistent GetItem). */
  private async read(key: ItemKey): Promise<Av | undefined> {
    const out = await this.client.send(new GetItemCommand({ TableName: this.table, Key: keyOf(key), ConsistentRead: true }));
    return out.Item;
  }

  /** write() for callers that need only the new attributes: undefined when the condition did not hold. */
  private async update(
    key: ItemKey,
    change: { set: Av; add?: Av; remove?: string[]; bump?: boolean },
    condition?: { condition: string; values: Av },
  ): Promise<Av | undefined> {
    return (await this.write(key, change, condition)).written;
  }

  /**
   * One UpdateItem. `bump` (default) increments the version. Returns the new attributes as
   * `written`, or, when the condition did not hold, the item as it was then as `old` if
   * `returnOld` asked for it and the server sent it (DynamoDB does; dynalite ignores the
   * parameter, so callers fall back to a consistent read).
   */
  private async write(
    key: ItemKey,
    change: { set: Av; add?: Av; remove?: string[]; bump?: boolean },
    condition?: { condition: string; values: Av; returnOld?: boolean },
  ): Promise<{ written?: Av; old?: Av }> {
    const names: Record<string, string> = {};
    const values: Av = { ...condition?.values };
    const sets: string[] = [];
    for (const [name, value] of Object.entries(change.set)) {
      const placeholder = `:s${sets.length}`;
      sets.push(`${name} = ${placeholder}`);
      values[placeholder] = value;
    }
    if (change.bump !== false) {
      sets.push('#ver = if_not_exists(#ver, :zero) + :one');
      values[':zero'] = num(0);
      values[':one'] = num(1);
    }
    const adds = Object.entries(change.add ?? {}).map(([name, value], i) => {
      values[`:a${i}`] = value;
      return `${name} :a${i}`;
    });
    const removes = (change.remove ?? []).filter((name) => !(name in change.set));
    const expression = [
      sets.length ? `SET ${sets.join(', ')}` : '',
      adds.length ? `ADD ${adds.join(', ')}` : '',
      removes.length ? `REMOVE ${removes.join(', ')}` : '',
    ].join(' ');
    const text = `${expression} ${condition?.condition ?? ''}`;
    // DynamoDB refuses names and values the expressions do not use.
    for (const [placeholder, attribute] of Object.entries(ATTRIBUTE_NAMES)) {
      if (new RegExp(`${placeholder}\\b`).test(text)) names[placeholder] = attribute;
    }
    try {
      const out = await this.client.send(
        new UpdateItemCommand({
          TableName: this.table,
          Key: keyOf(key),
          UpdateExpression: expression.trim(),
          ConditionExpression: condition?.condition,
          ExpressionAttributeNames: names,
          ExpressionAttributeValues: Object.keys(values).length ? values : undefined,
          ReturnValues: 'ALL_NEW',
          ReturnValuesOnConditionCheckFailure: condition?.returnOld ? 'ALL_OLD' : undefined,
        }),
      );
      return { written: out.Attributes ?? {} };
    } catch (err) {
      if (err instanceof ConditionalCheckFailedException || (err as { name?: string }).name === 'ConditionalCheckFailedException') {
        const old = (err as { Item?: Av }).Item;
        return old ? { old } : {};
      }
      throw err;
    }
  }
}

const ATTRIBUTE_NAMES: Record<string, string> = {
  '#ver': 'ver',
  '#v': 'v',
  '#n': 'n',
  '#exp': 'exp',
  '#ttl': 'ttl',
  '#owner': 'owner',
  '#tok': 'tok',
  '#st': 'st',
};

const LIVE = '(attribute_not_exists(#exp) OR #exp > :now)';

function keyOf(key: ItemKey): Av {
  return { pk: { S: key.pk }, sk: { S: key.sk } };
}

function num(n: number): AttributeValue {
  return { N: String(n) };
}

function writeValue(value: Json, options: WriteOptions): { set: Av; remove: string[] } {
  // Numbers are stored in `n`, where add() can ADD to them atomically; everything else as JSON.
  const set: Av = typeof value === 'number' ? { '#n': num(value) } : { '#v': { S: JSON.stringify(value) } };
  // A plain write ends a lease item (owner and state go) but keeps its token: tokens only grow.
  const remove = [typeof value === 'number' ? '#v' : '#n', '#owner', '#st'];
  if (options.expiresAt !== undefined) {
    set['#exp'] = num(options.expiresAt);
    set['#ttl'] = num(Math.floor(options.expiresAt / 1000) + HOUSEKEEPING_DELAY_S);
  } else {
    remove.push('#exp', '#ttl');
  }
  return { set, remove };
}

function leaseSet(owner: string, expiresAt: number): Av {
  return { '#owner': { S: owner }, ...expirySet(expiresAt) };
}

function expirySet(expiresAt: number): Av {
  // A lease's ttl never undercuts the housekeeping delay, so its token and state survive between holders.
  return { '#exp': num(expiresAt), '#ttl': num(Math.floor(expiresAt / 1000) + HOUSEKEEPING_DELAY_S) };
}

/** A lease result with the state stored in `raw`, when there is one. */
function withState<R extends LeaseResult>(result: R, raw: Av): R {
  return raw.st?.S === undefined ? result : { ...result, state: JSON.parse(raw.st.S) as Json };
}

/** The condition of a holder's write: `lease.owner` holds it live with `lease.token`. */
function heldBy(lease: Pick<Lease, 'owner' | 'token'>, now: number) {
  return {
    condition: '#owner = :owner AND #tok = :tok AND #exp > :now',
    values: { ':owner': { S: lease.owner }, ':tok': num(lease.token), ':now': num(now) },
  };
}

function isLive(raw: Av, now: number): boolean {
  return raw.exp === undefined || Number(raw.exp.N) > now;
}

function toItem<T extends Json>(raw: Av): Item<T> {
  let value: Json;
  if (raw.v?.S !== undefined) value = JSON.parse(raw.v.S) as Json;
  else if (raw.n?.N !== undefined) value = Number(raw.n.N);
  else if (raw.owner?.S !== undefined) {
    value = { owner: raw.owner.S, token: Number(raw.tok?.N ?? 0), ...(raw.st?.S === undefined ? {} : { state: JSON.parse(raw.st.S) as Json }) };
  }
  else value = null;
  const item: Item<T> = { value: value as T, version: Number(raw.ver?.N ?? 0) };
  if (raw.exp?.N !== undefined) item.expiresAt = Number(raw.exp.N);
  return item;
}
