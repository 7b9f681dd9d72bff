import type { Metadata } from "@grpc/grpc-js";
import type { Client } from "./client";
import { Envelope, SubscribeRequest } from "./gen/berth/v1/events";
import { ResponseStream } from "./stream";

/** One event: a change of an image, container, snapshot or task. */
export interface BerthEvent {
  /** "/containers/create", "/tasks/start", "/tasks/exit", ... */
  topic: string;
  /** The object: a container id or an image name. */
  id: string;
  namespace: string;
  timestamp: Date;
  /** "exit_code", "pid", "exec_id", "image", "name", ... */
  attributes: { [key: string]: string };
}

export function toEvent(e: Envelope): BerthEvent {
  return {
    topic: e.topic,
    id: e.id,
    namespace: e.namespace,
    timestamp: e.timestamp ?? new Date(0),
    attributes: e.attributes,
  };
}

export function toFilters(filters?: string | string[]): string[] {
  if (filters === undefined) {
    return [];
  }
  return typeof filters === "string" ? [filters] : [...filters];
}

/**
 * The events published after the subscription, as an async iterator; it
 * runs until `close()` (no deadline). `ready` settles once the agent has
 * registered the subscription: what happens after that is seen.
 */
export class EventStream implements AsyncIterableIterator<BerthEvent> {
  private readonly stream: ResponseStream<Envelope>;

  constructor(client: Client, filters?: string | string[]) {
    const call = client.api.events.subscribe(
      SubscribeRequest.fromPartial({ filters: toFilters(filters) }),
      client.metadata.clone(),
      client.callOptions(null),
    );
    this.stream = new ResponseStream(call);
  }

  /** Resolves when the subscription is in place, rejects if it failed. */
  get ready(): Promise<Metadata> {
    return this.stream.ready;
  }

  /** Cancel the subscription: the iteration ends after the events already received. */
  close(): void {
    this.stream.close();
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  async next(): Promise<IteratorResult<BerthEvent>> {
    const r = await this.stream.next();
    return r.done ? { done: true, value: undefined } : { done: false, value: toEvent(r.value) };
  }

  async return(): Promise<IteratorResult<BerthEvent>> {
    this.close();
    return { done: true, value: undefined };
  }
}
