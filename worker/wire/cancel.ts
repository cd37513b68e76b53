/** Something a CancelRequest can reach: a wire session. */
export interface Cancellable {
  /** Cancels the running query if a server connection is attached; resolves whether a cancel was sent. */
  cancel(): Promise<boolean>;
}

/** A session's cancel key: the pid and secret of its BackendKeyData. */
export interface CancelKey {
  readonly pid: number;
  readonly secret: number;
}

/** Random signed 32-bit integers; injected so tests can force collisions. */
export type RandomInt32 = () => number;

/** Random values drawn per `getRandomValues` call: a key takes two, and each call is a trip into the runtime. */
const RANDOM_BATCH = 256;
const randomPool = new Int32Array(RANDOM_BATCH);
let randomLeft = 0;

const cryptoInt32: RandomInt32 = () => {
  if (randomLeft === 0) {
    crypto.getRandomValues(randomPool);
    randomLeft = RANDOM_BATCH;
  }
  return randomPool[--randomLeft]!;
};

/**
 * The coordinator's cancel keys: each session gets a random (pid, secret)
 * of the coordinator's own, the pid unique among live sessions. A
 * CancelRequest reaches only the session owning that exact key; the
 * server's own key never leaves the coordinator.
 */
export class CancelKeys {
  private readonly byPid = new Map<number, { key: CancelKey; target: Cancellable }>();

  private readonly random: RandomInt32;

  constructor(random: RandomInt32 = cryptoInt32) {
    this.random = random;
  }

  /** A fresh key for `target`, until `revoke`. */
  issue(target: Cancellable): CancelKey {
    let pid: number;
    // Positive pids, as a server's; a clash with a live session draws again.
    do pid = this.random() & 0x7fffffff;
    while (pid === 0 || this.byPid.has(pid));
    const key = { pid, secret: this.random() | 0 };
    this.byPid.set(pid, { key, target });
    return key;
  }

  /** The session ended: its key matches nothing any more. */
  revoke(key: CancelKey): void {
    if (this.byPid.get(key.pid)?.key === key) this.byPid.delete(key.pid);
  }

  /** The session owning exactly this key, if any. */
  find(pid: number, secret: number): Cancellable | undefined {
    const entry = this.byPid.get(pid);
    return entry && entry.key.secret === (secret | 0) ? entry.target : undefined;
  }

  /** Handles a CancelRequest: resolves whether a cancel was sent to a server. */
  async cancel(pid: number, secret: number): Promise<boolean> {
    const target = this.find(pid, secret);
    return target ? target.cancel() : false;
  }

  /** Live keys. */
  get size(): number {
    return this.byPid.size;
  }
}
