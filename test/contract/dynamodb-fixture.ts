import { UpdateItemCommand, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { ReplyLost } from './meta-index-fixture.js';

/**
 * A DynamoDB client that, once armed, loses the reply of the nth UpdateItem the table applies
 * (a refused one answers as usual): thrown as a timeout, or with `resend` re-sent first, as the
 * SDK's own retry does after a timeout, answering with what that second send got.
 */
export function replyLosingClient(client: DynamoDBClient, resend: boolean): { client: DynamoDBClient; loseReply: (nth?: number) => void } {
  let countdown = 0;
  const lossy = {
    async send(command: UpdateItemCommand) {
      const out = await client.send(command);
      if (countdown === 0 || !(command instanceof UpdateItemCommand) || --countdown > 0) return out;
      if (resend) return client.send(command);
      throw new ReplyLost();
    },
  } as unknown as DynamoDBClient;
  return { client: lossy, loseReply: (nth = 1) => void (countdown = nth) };
}
