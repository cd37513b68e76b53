import { Buffer } from "node:buffer";
import { EventEmitter } from "node:events";

/** The two byte streams a socket runs over: what it reads, and where it writes. */
export interface Tunnel {
  readable: ReadableStream<Uint8Array>;
  writable: WritableStream<Uint8Array>;
}

type WriteCallback = (error?: Error | null) => void;

/**
 * A Node-style duplex socket over a tunnel of web streams, accepted as is by
 * postgres.js (`socket` option) and pg (`stream` option). The tunnel opens
 * asynchronously; writes made before then are kept and sent in order.
 *
 * Events: `connect` (after `connect()`), `data` (Buffers), `drain`, `end`,
 * `finish`, `error`, `close(hadError)`. Like a net.Socket without half-open:
 * when the readable ends the writable is closed too.
 */
export class WireSocket extends EventEmitter {
  /** net.Socket's state names; "open" from the start because writes are accepted (and kept) before the tunnel opens. */
  readyState: "open" | "readOnly" | "closed" = "open";
  /** pg skips every write while this is false. */
  writable = true;
  readable = true;
  destroyed = false;

  #reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  #writer: WritableStreamDefaultWriter<Uint8Array> | undefined;
  #early: { bytes: Uint8Array; callback?: WriteCallback }[] = [];
  #connectWanted = false;
  #ended = false;
  #flowing = false;
  #pausedByCaller = false;
  #reading = false;
  #held: Buffer | undefined;
  #drainWanted = false;

  constructor(tunnel: Tunnel | Promise<Tunnel>) {
    super();
    // Like a net.Socket, reading starts when someone listens for data (or calls resume()).
    this.on("newListener", (event) => {
      if (event === "data" && !this.#pausedByCaller) queueMicrotask(() => this.#pausedByCaller || this.resume());
    });
    Promise.resolve(tunnel).then((t) => this.#open(t), (error) => this.destroy(asError(error)));
  }

  /** pg calls this and waits for `connect`; the tunnel has no address, so the arguments are ignored. */
  connect(..._ignored: unknown[]): this {
    if (this.#writer) queueMicrotask(() => this.emit("connect"));
    else this.#connectWanted = true;
    return this;
  }

  /**
   * Sends bytes; the callback runs once the tunnel took them. Returns false when
   * the tunnel's queue is full: wait for `drain` before writing more.
   */
  write(chunk: Uint8Array | string, encoding?: BufferEncoding | WriteCallback, callback?: WriteCallback): boolean {
    if (typeof encoding === "function") [callback, encoding] = [encoding, undefined];
    if (this.#ended || this.destroyed) {
      const error = new Error("write after end");
      queueMicrotask(() => callback?.(error));
      return false;
    }
    const bytes = typeof chunk === "string" ? Buffer.from(chunk, encoding) : chunk;
    if (!this.#writer) {
      this.#early.push({ bytes, callback });
      return true;
    }
    return this.#send(bytes, callback);
  }

  /** Sends the last bytes, then closes the writable side; `close` follows when the peer ends the readable. */
  end(chunk?: Uint8Array | string | (() => void), callback?: () => void): this {
    if (typeof chunk === "function") [callback, chunk] = [chunk, undefined];
    if (this.#ended || this.destroyed) return this;
    if (chunk !== undefined) this.write(chunk);
    this.#ended = true;
    this.writable = false;
    this.readyState = "readOnly";
    if (callback) this.once("finish", callback);
    if (this.#writer) this.#closeWriter();
    return this;
  }

  /** Cancels both streams at once; emits `error` (if given) then `close`. */
  destroy(error?: Error): this {
    if (this.destroyed) return this;
    this.destroyed = true;
    this.writable = false;
    this.readable = false;
    this.readyState = "closed";
    this.#reader?.cancel(error).catch(() => {});
    // A plain destroy ends the session as cleanly as end(); aborting a stream sent over RPC only adds a rejection nobody handles.
    (error ? this.#writer?.abort(error) : this.#writer?.close())?.catch(() => {});
    for (const { callback } of this.#early.splice(0)) callback?.(error ?? new Error("socket destroyed"));
    queueMicrotask(() => {
      if (error) this.emit("error", error);
      this.emit("close", error !== undefined);
    });
    return this;
  }

  /** Stops reading from the tunnel (the peer's writes back up behind it). */
  pause(): this {
    this.#pausedByCaller = true;
    this.#flowing = false;
    return this;
  }

  /** Reads from the tunnel again, handing over a chunk held back by pause() first. */
  resume(): this {
    this.#pausedByCaller = false;
    this.#flowing = true;
    const held = this.#held;
    this.#held = undefined;
    if (held) this.emit("data", held);
    void this.#pump();
    return this;
  }

  /** No-ops a driver may call: the tunnel has no TCP options and keeps nothing alive by itself. */
  setNoDelay(): this { return this; }
  setKeepAlive(): this { return this; }
  setTimeout(): this { return this; }
  ref(): this { return this; }
  unref(): this { return this; }

  #open(tunnel: Tunnel): void {
    if (this.destroyed) {
      tunnel.readable.cancel().catch(() => {});
      tunnel.writable.abort().catch(() => {});
      return;
    }
    this.#reader = tunnel.readable.getReader();
    this.#writer = tunnel.writable.getWriter();
    for (const { bytes, callback } of this.#early.splice(0)) this.#send(bytes, callback);
    if (this.#ended) this.#closeWriter();
    if (this.#connectWanted) this.emit("connect");
    void this.#pump();
  }

  #send(bytes: Uint8Array, callback?: WriteCallback): boolean {
    const writer = this.#writer!;
    writer.write(bytes).then(() => callback?.(), (error) => {
      callback?.(asError(error));
      this.destroy(asError(error));
    });
    if ((writer.desiredSize ?? 1) > 0) return true;
    if (!this.#drainWanted) {
      this.#drainWanted = true;
      writer.ready.then(() => {
        this.#drainWanted = false;
        if (!this.destroyed) this.emit("drain");
      }, () => {});
    }
    return false;
  }

  #closeWriter(): void {
    this.#writer!.close().then(() => this.emit("finish"), () => {});
  }

  async #pump(): Promise<void> {
    if (this.#reading || !this.#reader || !this.#flowing || this.destroyed) return;
    this.#reading = true;
    try {
      while (this.#flowing && !this.destroyed) {
        const { value, done } = await this.#reader.read();
        if (this.destroyed) return;
        if (done) return this.#readableEnded();
        if (value.byteLength === 0) continue;
        // Drivers call Buffer methods on chunks: wrap, do not copy.
        const chunk = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
        if (this.#flowing) this.emit("data", chunk);
        else this.#held = chunk;
      }
    } catch (error) {
      this.destroy(asError(error));
    } finally {
      this.#reading = false;
    }
  }

  #readableEnded(): void {
    this.readable = false;
    this.emit("end");
    if (!this.#ended) this.end();
    this.destroyed = true;
    this.writable = false;
    this.readyState = "closed";
    this.emit("close", false);
  }
}

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}
