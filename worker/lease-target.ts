import { RpcTarget } from "cloudflare:workers";
import { PoolError } from "../src/errors.ts";
import type { CallOptions, LeaseApi, Reply } from "../src/protocol.ts";
import type { FrontDoor } from "./front.ts";
import { reply } from "./reply.ts";
import type { ServerConnection } from "./server/connection.ts";
import type { BatchRunner } from "./wire/batch.ts";

/**
 * A built-in lease as the borrower holds it: a session-mode wire session
 * without startup, one `run()` per batch. Disposing it (or the caller's
 * request ending) ends the session: the transaction is rolled back, the
 * session reset, the connection returned.
 */
export class LeaseTarget extends RpcTarget implements LeaseApi {
  readonly #front: FrontDoor;
  readonly #runner: BatchRunner<ServerConnection>;
  readonly #id: number;
  #released = false;

  constructor(front: FrontDoor, runner: BatchRunner<ServerConnection>, id: number) {
    super();
    this.#front = front;
    this.#runner = runner;
    this.#id = id;
  }

  async run(bytes: Uint8Array, options?: CallOptions): Promise<Reply<Uint8Array>> {
    const { tenant } = this.#front;
    return reply(tenant, async () => {
      if (this.#released) throw new PoolError("LEASE_RELEASED", tenant, `tenant "${tenant}" lease ${this.#id} was already released`);
      return this.#front.run(this.#runner, bytes, options);
    });
  }

  async release(): Promise<Reply<null>> {
    this.#end();
    return { ok: true, value: null };
  }

  /** Runs when the borrower disposes its stub or its request ends. */
  [Symbol.dispose](): void {
    this.#end();
  }

  #end(): void {
    if (this.#released) return;
    this.#released = true;
    void this.#runner.endWhenDone();
  }
}
