import type { ClientDuplexStream, ClientReadableStream, Metadata } from "@grpc/grpc-js";
import { toBerthError } from "./errors";

type Call<T> = ClientReadableStream<T> | ClientDuplexStream<unknown, T>;

/** Messages kept before the call is paused (flow control), and the level at which it resumes. */
const HIGH_WATER = 32;
const LOW_WATER = 8;

/**
 * The responses of a server-streaming or bidi call as an async iterator.
 *
 * Listeners are attached at once, so nothing is lost (and no error goes
 * unhandled) before the first `next()`. An error status rejects `next()`
 * with the matching BerthError, after the messages that came before it.
 * `close()` (or leaving a `for await` loop early) cancels the call and ends
 * the iteration without an error.
 */
export class ResponseStream<T> implements AsyncIterableIterator<T> {
  /** Settles when the agent answered with its headers (the call is set up), or failed. */
  readonly ready: Promise<Metadata>;

  private readonly queue: T[] = [];
  private waiter: { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void } | undefined;
  private ended = false;
  private error: unknown;
  private closed = false;
  private paused = false;

  constructor(readonly call: Call<T>) {
    let gotHeaders: (md: Metadata) => void = () => {};
    let failed: (e: unknown) => void = () => {};
    this.ready = new Promise<Metadata>((resolve, reject) => {
      gotHeaders = resolve;
      failed = reject;
    });
    // A caller that never looks at `ready` must not get an unhandled rejection.
    this.ready.catch(() => {});

    call.on("metadata", (md: Metadata) => gotHeaders(md));
    call.on("data", (msg: T) => {
      this.queue.push(msg);
      if (this.queue.length >= HIGH_WATER && !this.paused) {
        this.paused = true;
        call.pause();
      }
      this.wake();
    });
    call.on("error", (err: unknown) => {
      const e = toBerthError(err);
      failed(e);
      if (this.error === undefined) {
        this.error = e;
      }
      // Messages still buffered in the stream come out before 'end'.
      if (this.paused) {
        this.paused = false;
        call.resume();
      }
      this.wake();
    });
    call.on("end", () => {
      this.ended = true;
      this.wake();
    });
  }

  /** Cancel the call; the iteration ends (without an error) once the queued messages are taken. */
  close(): void {
    if (!this.closed) {
      this.closed = true;
      this.call.cancel();
      this.wake();
    }
  }

  get isClosed(): boolean {
    return this.closed;
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  next(): Promise<IteratorResult<T>> {
    if (this.waiter) {
      return Promise.reject(new Error("next() called while a previous next() is pending"));
    }
    return new Promise<IteratorResult<T>>((resolve, reject) => {
      this.waiter = { resolve, reject };
      this.wake();
    });
  }

  async return(): Promise<IteratorResult<T>> {
    this.close();
    this.queue.length = 0;
    return { done: true, value: undefined };
  }

  /** Read every remaining message. */
  async toArray(): Promise<T[]> {
    const all: T[] = [];
    for await (const m of this) {
      all.push(m);
    }
    return all;
  }

  private wake(): void {
    const w = this.waiter;
    if (!w) {
      return;
    }
    if (this.queue.length > 0) {
      this.waiter = undefined;
      const value = this.queue.shift() as T;
      if (this.paused && this.queue.length <= LOW_WATER) {
        this.paused = false;
        this.call.resume();
      }
      w.resolve({ done: false, value });
      return;
    }
    if (this.closed) {
      this.waiter = undefined;
      w.resolve({ done: true, value: undefined });
      return;
    }
    if (this.error !== undefined && (this.ended || this.call.readableLength === 0)) {
      this.waiter = undefined;
      w.reject(this.error);
      return;
    }
    if (this.ended) {
      this.waiter = undefined;
      w.resolve({ done: true, value: undefined });
    }
  }
}
