import { writeBatch, type Backend, type Receiver } from "./backend.ts";
import { readInt32, Type } from "./messages.ts";

/** The pipeline of each shared lease (one per server connection while anyone rides it). */
const pipelines = new WeakMap<object, Pipeline>();

/**
 * One server connection shared by one-shot sessions (pool leases with
 * `holders > 1`). It is the backend's one `Receiver`: riders queue in the
 * order they joined (their ticket), their batches are written in that order,
 * and the server's answers go to them in that order, each rider getting the
 * messages up to and including its own last ReadyForQuery.
 */
export class Pipeline {
  private readonly riders: Rider[] = [];
  /** Riders that got messages in the current read: they are flushed at its end. */
  private readonly touched = new Set<Rider>();
  private closedBy: Error | undefined;

  private constructor(
    private readonly key: object,
    private readonly backend: Backend,
  ) {
    // Methods, not arrow properties: the Worker bundle (esbuild keepNames) names each arrow with a defineProperty call, per pipeline.
    const pipeline = this;
    backend.receive({
      message(type, frame) {
        pipeline.message(type, frame);
      },
      flush() {
        return pipeline.flush();
      },
      closed(cause) {
        pipeline.close(cause);
      },
    });
  }

  /**
   * Queues a session on the server connection of `lease` (`key`); the
   * session's receiver gets its share of the server's messages from now on.
   * Registry decisions and the write must follow in the same synchronous
   * stretch, so that their order is the ticket order.
   */
  static join(key: object, backend: Backend, receiver: Receiver): Rider {
    let pipeline = pipelines.get(key);
    if (!pipeline) {
      pipeline = new Pipeline(key, backend);
      pipelines.set(key, pipeline);
    }
    const rider = new Rider(pipeline, receiver);
    pipeline.riders.push(rider);
    return rider;
  }

  /** Sends a rider's batch once every earlier rider has written its own. */
  write(rider: Rider, pieces: Uint8Array[]): Promise<void> {
    if (this.closedBy) return Promise.reject(this.closedBy);
    if (rider.pieces || !this.riders.includes(rider)) return Promise.reject(new Error("INTERNAL: a rider writes once, while it rides"));
    rider.pieces = pieces;
    for (const bytes of pieces) rider.due += readiesIn(bytes);
    const written = new Promise<void>((resolve, reject) => (rider.written = { resolve, reject }));
    this.pump();
    return written;
  }

  /**
   * A rider is done (`broken`: its session failed or ended with answers due).
   * Leaving with answers still due would hand them to the next rider: the
   * connection is given up for everyone instead.
   */
  leave(rider: Rider, broken?: Error): void {
    const index = this.riders.indexOf(rider);
    if (index < 0) return;
    if (broken || rider.due > 0) return this.close(broken ?? new Error("a pipelined session left with answers due"));
    this.riders.splice(index, 1);
    this.touched.delete(rider);
    if (this.riders.length === 0) {
      pipelines.delete(this.key);
      this.backend.receive(undefined);
      return;
    }
    // A rider that never wrote no longer holds back those behind it.
    this.pump();
  }

  /** Cancels the rider's query once the server is on it: a cancel sent earlier would hit an earlier rider's query. */
  cancel(rider: Rider): Promise<void> {
    rider.cancel = true;
    return this.cancelAtHead();
  }

  /** Writes the batches whose earlier riders have all written, in ticket order. */
  private pump(): void {
    for (const rider of this.riders) {
      if (rider.sent) continue;
      if (!rider.pieces) return;
      rider.sent = true;
      const { resolve, reject } = rider.written!;
      writeBatch(this.backend, rider.pieces).then(() => resolve(), reject);
    }
    // A cancel owed to the rider now at the head; a failed cancel is no one's error (the query just runs on).
    void this.cancelAtHead().catch(() => {});
  }

  /** The rider the server's next message belongs to: the first one not done. */
  private head(): Rider | undefined {
    return this.riders.find((rider) => !rider.sent || rider.due > 0);
  }

  private cancelAtHead(): Promise<void> {
    const head = this.head();
    if (!head?.cancel || !head.sent) return Promise.resolve();
    head.cancel = false;
    return this.backend.cancel();
  }

  private message(type: number, frame: Uint8Array): void {
    const rider = this.head();
    if (!rider) {
      // Nothing is owed to anyone: notices and parameters are harmless, anything else means the count is off.
      if (type === Type.NoticeResponse || type === Type.ParameterStatus || type === Type.NotificationResponse) return;
      return this.close(new Error(`the server sent an unexpected message (type ${String.fromCharCode(type)}) with no pipelined session waiting`));
    }
    this.touched.add(rider);
    if (type === Type.ReadyForQuery && rider.due > 0 && --rider.due === 0) void this.cancelAtHead().catch(() => {});
    rider.receiver.message(type, frame);
  }

  private flush(): void | Promise<void> {
    const touched = [...this.touched];
    this.touched.clear();
    let pending: Promise<void>[] | undefined;
    for (const rider of touched) {
      const result = rider.receiver.flush();
      if (result) (pending ??= []).push(result);
    }
    return pending ? Promise.all(pending).then(() => undefined) : undefined;
  }

  /** The connection is gone (or given up): every rider still on it hears why; writes not sent fail. */
  private close(cause: Error): void {
    if (this.closedBy) return;
    this.closedBy = cause;
    pipelines.delete(this.key);
    const riders = this.riders.splice(0);
    this.touched.clear();
    for (const rider of riders) {
      if (rider.written && !rider.sent) rider.written.reject(cause);
      rider.receiver.closed(cause);
    }
  }
}

/** One session's place in a pipeline (its ticket). */
export class Rider {
  /** ReadyForQuery messages still due to this rider: one per Sync and Query it wrote. */
  due = 0;
  /** Its batch, once handed over; `sent` once given to the backend. */
  pieces: Uint8Array[] | undefined;
  sent = false;
  written: { resolve: () => void; reject: (error: Error) => void } | undefined;
  /** A cancel is owed once the server gets to this rider's query. */
  cancel = false;

  constructor(
    readonly pipeline: Pipeline,
    readonly receiver: Receiver,
  ) {}
}

/** Sync and Query messages among whole frontend messages: each is answered by one ReadyForQuery. */
function readiesIn(bytes: Uint8Array): number {
  let count = 0;
  for (let at = 0; at + 5 <= bytes.length; at += 1 + readInt32(bytes, at + 1)) {
    if (bytes[at] === Type.Sync || bytes[at] === Type.Query) count++;
  }
  return count;
}
