// The Worker isolate over the DevTools protocol (wrangler's inspector proxy): its JS heap, and the
// session bench/profile.ts runs the CPU profiler in. A session for the heap is opened per reading
// and closed again: while one is attached, workerd runs an inspector hook on every call, which the
// profile showed at about 11 µs per one-shot query.

/** JS heap in use in the isolate (the bench Worker and both coordinators), MiB; NaN when the inspector cannot be reached. */
export async function heapMiB(inspectorUrl: string): Promise<number> {
  let inspector: Inspector | undefined;
  try {
    inspector = await Inspector.connect(inspectorUrl);
    return await inspector.heapMiB();
  } catch {
    return NaN;
  } finally {
    inspector?.close();
  }
}

export class Inspector {
  private next = 0;
  private readonly pending = new Map<number, { resolve: (result: any) => void; reject: (error: Error) => void }>();
  private readonly ws: WebSocket;
  /** Called with every event (a message without an id), such as Debugger.scriptParsed. */
  onEvent: (method: string, params: any) => void = () => {};

  private constructor(ws: WebSocket) {
    this.ws = ws;
    ws.binaryType = "arraybuffer";
    ws.addEventListener("message", (event) => {
      const text = typeof event.data === "string" ? event.data : new TextDecoder().decode(event.data as ArrayBuffer);
      const message = JSON.parse(text) as { id?: number; result?: unknown; error?: { message: string }; method?: string; params?: unknown };
      if (message.id === undefined) {
        if (message.method) this.onEvent(message.method, message.params);
        return;
      }
      const pending = this.pending.get(message.id);
      this.pending.delete(message.id);
      if (message.error) pending?.reject(new Error(message.error.message));
      else pending?.resolve(message.result);
    });
  }

  static async connect(base: string): Promise<Inspector> {
    const targets = (await (await fetch(new URL("/json", base), { signal: AbortSignal.timeout(10_000) })).json()) as { webSocketDebuggerUrl: string }[];
    if (!targets[0]) throw new Error("no inspector target");
    // wrangler's inspector proxy wants an Origin header from a local page.
    const ws = new WebSocket(targets[0].webSocketDebuggerUrl, { headers: { Origin: "http://localhost" } } as never);
    await new Promise((resolve, reject) => {
      setTimeout(() => reject(new Error("inspector WebSocket did not open within 10 s")), 10_000);
      ws.addEventListener("open", resolve, { once: true });
      ws.addEventListener("error", () => reject(new Error("inspector WebSocket refused")), { once: true });
    });
    return new Inspector(ws);
  }

  /** `timeoutMs`: Profiler.stop of a long run takes longer than the default to send its profile. */
  call<T>(method: string, params: object = {}, timeoutMs = 5_000): Promise<T> {
    return new Promise((resolve, reject) => {
      const id = ++this.next;
      const timer = setTimeout(() => (this.pending.delete(id), reject(new Error(`${method} timed out`))), timeoutMs);
      this.pending.set(id, {
        resolve: (result) => (clearTimeout(timer), resolve(result as T)),
        reject: (error) => (clearTimeout(timer), reject(error)),
      });
      this.ws.send(JSON.stringify({ id, method, params }));
    });
  }

  /** workerd's inspector cannot force a GC, so garbage not yet collected counts. */
  async heapMiB(): Promise<number> {
    const { usedSize } = await this.call<{ usedSize: number; totalSize: number }>("Runtime.getHeapUsage");
    return usedSize / 2 ** 20;
  }

  close(): void {
    this.ws.close();
  }
}

