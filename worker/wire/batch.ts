import { PoolError } from "../../src/errors.ts";
import type { Backend } from "./backend.ts";
import { WireSession, type WireSessionDeps } from "./session.ts";

/** What a batch runner needs: a session's dependencies less those it provides itself. */
export type BatchDeps<B extends Backend> = Omit<WireSessionDeps<B>, "send" | "close" | "startup">;

/**
 * The built-in client's path: batches of frontend bytes (each ending in Sync
 * or Query, no startup) through one `startup: false` session, each answered
 * with the backend bytes up to the ReadyForQuery of its last Sync/Query.
 * Batches run one after the other; a transaction may span several.
 *
 * A batch whose answer exceeds `maxBytes` fails with `RESULT_TOO_LARGE`
 * (a `PoolError`) at once; the rest of its answer is read and dropped so the
 * server connection is released clean (no cancel: it could hit the next
 * batch's query). A FATAL error ends the session: the batch resolves with the
 * bytes so far, the ErrorResponse last, and later batches fail with
 * `BAD_REQUEST`.
 */
export class BatchRunner<B extends Backend> {
  readonly session: WireSession<B>;
  private chunks: Uint8Array[] = [];
  private size = 0;
  private over: ((error: PoolError) => void) | undefined;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(
    deps: BatchDeps<B>,
    /** The most bytes one batch's answer may have. */
    readonly maxBytes: number,
  ) {
    const runner = this;
    // Methods, not arrow properties: the Worker bundle (esbuild keepNames) names each arrow with a defineProperty call, per one-shot.
    this.session = new WireSession<B>({
      ...deps,
      startup: false,
      send(bytes) {
        runner.collect(bytes);
      },
      close() {},
    });
  }

  /** Runs one batch; resolves with its answer. */
  run(bytes: Uint8Array): Promise<Uint8Array> {
    const result = this.chain.then(() => this.runNow(bytes));
    this.chain = result.catch(() => undefined);
    return result;
  }

  /** The caller is done: an open transaction is rolled back and the connection returned. */
  end(): void {
    this.session.end();
  }

  /** Ends the session once the batches in progress were answered (a dropped answer is read to its end first). */
  endWhenDone(): Promise<void> {
    return this.chain.then(() => this.session.end());
  }

  private async runNow(bytes: Uint8Array): Promise<Uint8Array> {
    const { tenant } = this.session;
    if (this.session.closed) throw new PoolError("BAD_REQUEST", tenant, `tenant "${tenant}": the session has ended`);
    this.chunks = [];
    this.size = 0;
    const tooLarge = new Promise<never>((_, reject) => (this.over = reject));
    tooLarge.catch(() => undefined);
    const done = this.session.receive(bytes).then(() => this.session.answered());
    try {
      await Promise.race([done, tooLarge]);
    } catch (error) {
      // The answer is still read (and dropped) before the next batch goes out.
      this.chain = this.chain.then(() => done);
      throw error;
    } finally {
      this.over = undefined;
    }
    return concat(this.chunks, this.size);
  }

  private collect(bytes: Uint8Array): void {
    if (!this.over) return;
    this.size += bytes.length;
    if (this.size > this.maxBytes) {
      const { tenant } = this.session;
      this.over(new PoolError("RESULT_TOO_LARGE", tenant, `tenant "${tenant}" result exceeds maxResultBytes (${this.maxBytes} bytes, counted ${this.size} before stopping); select fewer rows or columns, or page with LIMIT (a driver session through postgresOptions()/pgOptions() streams results of any size)`));
      this.over = undefined;
      this.chunks = [];
      return;
    }
    this.chunks.push(bytes);
  }
}

/** Runs one batch through a fresh transaction-mode session and ends it. */
export async function runBatch<B extends Backend>(deps: BatchDeps<B>, bytes: Uint8Array, maxBytes: number): Promise<Uint8Array> {
  const runner = new BatchRunner<B>(deps, maxBytes);
  try {
    return await runner.run(bytes);
  } finally {
    void runner.endWhenDone();
  }
}

function concat(chunks: Uint8Array[], size: number): Uint8Array {
  if (chunks.length === 1) return chunks[0]!;
  const out = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
}
