import { describe, expect, it } from "vitest";
import type { Backend, Receiver } from "../../worker/wire/backend.ts";
import { readInt32 } from "../../worker/wire/messages.ts";
import { Pipeline } from "../../worker/wire/pipeline.ts";
import { flush } from "./helpers.ts";
import { concat, fe, makeWire, TestClient, type Wire } from "./wire-helpers.ts";

/** A one-shot as the built-in client builds it: named Parse first, then Bind, Describe portal, Execute, Sync. */
function oneShot(name: string, text: string, value: string): Uint8Array {
  return concat([fe.parse(name, text), fe.bind(name, [value]), fe.describe("P", ""), fe.execute(), fe.sync()]);
}

function rows(client: TestClient): string[] {
  return client.received.filter((m) => m.type === "D").map((m) => m.text);
}

/** One shared session holding the only backend with a query that answers on `resume()`. */
async function busy(wire: Wire): Promise<TestClient> {
  const x = wire.client({ shared: true });
  await x.send(fe.query("sleep"));
  return x;
}

async function resumeAll(wire: Wire): Promise<void> {
  for (const backend of wire.driver.backends) backend.resume();
  await wire.clock.advance(0);
}

describe("pipelining one-shot batches on shared backends", () => {
  it("riders share a backend only at max, and only while nobody waits", async () => {
    const wire = makeWire({ maxConnections: 2, pipelineDepth: 4 });
    const a = await busy(wire);
    const b = await busy(wire);
    // Below max a new connection is the better choice.
    expect(wire.driver.backends).toHaveLength(2);
    expect(wire.pool.stats().pipelined).toBe(0);
    const c = wire.client({ shared: true });
    await c.send(fe.query("select 'c'"));
    expect(wire.pool.stats().pipelined).toBe(1);
    expect([a.session.backend, b.session.backend]).toContain(c.session.backend);
    // An unshared borrower waits; a one-shot behind it does not overtake it.
    const d = wire.client();
    await d.send(fe.query("select 'd'"));
    const e = wire.client({ shared: true });
    await e.send(fe.query("select 'e'"));
    expect(wire.pool.stats()).toMatchObject({ pipelined: 1, waiting: 2 });
    await resumeAll(wire);
    expect([rows(c), rows(d), rows(e)]).toEqual([["c"], ["d"], ["e"]]);
    expect(wire.driver.backends).toHaveLength(2);
    expect(wire.pool.stats().leased).toBe(0);
  });

  it("each rider gets exactly its own answers, up to its own last ReadyForQuery", async () => {
    const wire = makeWire({ maxConnections: 1, pipelineDepth: 4 });
    const x = await busy(wire);
    const a = wire.client({ shared: true });
    const b = wire.client({ shared: true });
    const c = wire.client({ shared: true });
    await a.send(oneShot("edgepool_a", "select $1", "a"));
    await b.send(fe.query("select 'b1'"), fe.query("select 'b2'"));
    await c.send(fe.query("rows 3"), oneShot("edgepool_c", "select $1 as c", "c"));
    expect(wire.pool.stats().pipelined).toBe(3);
    const [backend] = wire.driver.backends;
    for (const client of [a, b, c]) expect(client.session.backend).toBe(backend);
    await resumeAll(wire);
    expect(x.types()).toBe("C Z");
    expect(a.types()).toBe("1 2 T D C Z");
    expect(rows(a)).toEqual(["a"]);
    expect(b.types()).toBe("T D C Z T D C Z");
    expect(rows(b)).toEqual(["b1", "b2"]);
    expect(rows(c)).toEqual(["row 0", "row 1", "row 2", "c"]);
    expect(c.received.filter((m) => m.type === "Z")).toHaveLength(2);
    expect(wire.pool.stats()).toMatchObject({ leased: 0, idle: 1 });
    // A clean ReadyForQuery `I` on every rider: no reset.
    expect(wire.driver.resets).toEqual([]);
    expect(backend!.orphans).toBe(0);
  });

  it("a failing rider in the middle: its own ErrorResponse and ReadyForQuery, the riders behind it unharmed", async () => {
    const wire = makeWire({ maxConnections: 1 });
    const x = await busy(wire);
    const a = wire.client({ shared: true });
    const b = wire.client({ shared: true });
    const c = wire.client({ shared: true });
    await a.send(fe.query("select 'a'"));
    await b.send(oneShot("edgepool_f", "fail here", "b"));
    await c.send(oneShot("edgepool_c", "select $1", "c"));
    await resumeAll(wire);
    expect(x.types()).toBe("C Z");
    expect(rows(a)).toEqual(["a"]);
    expect(b.types()).toBe("1 2 n E Z");
    expect(b.received[3]!.fields!.get("C")).toBe("42000");
    expect(c.types()).toBe("1 2 T D C Z");
    expect(rows(c)).toEqual(["c"]);
    expect(wire.pool.stats().leased).toBe(0);
    expect(wire.driver.resets).toEqual([]);
  });

  it("a Parse that fails ahead of a rider using the same statement: the rider's Bind fails cleanly (26000) and the statement is prepared again next time", async () => {
    const wire = makeWire({ maxConnections: 1 });
    await busy(wire);
    const a = wire.client({ shared: true });
    const b = wire.client({ shared: true });
    await a.send(oneShot("edgepool_s", "syntax error here", "a"));
    // B finds the statement on the backend (A's Parse is queued ahead of it) and sends only Bind…
    await b.send(oneShot("edgepool_s", "syntax error here", "b"));
    const [backend] = wire.driver.backends;
    expect(backend!.log.filter((m) => m.startsWith("P:"))).toHaveLength(1);
    await resumeAll(wire);
    expect(a.types()).toBe("E Z");
    expect(a.received[0]!.fields!.get("C")).toBe("42601");
    expect(b.types()).toBe("1 E Z");
    expect(b.received[1]!.fields!.get("C")).toBe("26000");
    expect(wire.pool.stats().leased).toBe(0);
    // The failed Parse left the registry: the next one-shot parses again and gets the real error.
    const c = wire.client({ shared: true });
    await c.send(oneShot("edgepool_s", "syntax error here", "c"));
    expect(backend!.log.filter((m) => m.startsWith("P:"))).toHaveLength(2);
    expect(c.types()).toBe("E Z");
    expect(c.received[0]!.fields!.get("C")).toBe("42601");
  });

  it("a backend that closes under three riders: each gets LEASE_LOST", async () => {
    const wire = makeWire({ maxConnections: 1 });
    const x = await busy(wire);
    const a = wire.client({ shared: true });
    const b = wire.client({ shared: true });
    await a.send(fe.query("select 'a'"));
    await b.send(oneShot("edgepool_b", "select $1", "b"));
    wire.driver.backends[0]!.close();
    await wire.clock.advance(0);
    for (const client of [x, a, b]) {
      expect(client.session.endedBy?.code).toBe("LEASE_LOST");
      expect(client.closed).toBe(true);
      expect(client.received.at(-1)!.fields!.get("S")).toBe("FATAL");
    }
    expect(wire.pool.stats()).toMatchObject({ leased: 0, total: 0 });
    // The next one-shot gets a new backend.
    const c = wire.client({ shared: true });
    await c.send(fe.query("select 'c'"));
    await wire.clock.advance(0);
    expect(rows(c)).toEqual(["c"]);
  });

  it("a rider whose session ends with answers due gives the backend up for every rider (LEASE_LOST), never hands its answers on", async () => {
    const wire = makeWire({ maxConnections: 1 });
    const x = await busy(wire);
    const a = wire.client({ shared: true });
    const b = wire.client({ shared: true });
    await a.send(fe.query("select 'a'"));
    await b.send(fe.query("select 'b'"));
    a.session.end();
    await wire.clock.advance(0);
    expect(x.session.endedBy?.code).toBe("LEASE_LOST");
    expect(b.session.endedBy?.code).toBe("LEASE_LOST");
    expect(wire.driver.backends[0]!.closed).toBe(true);
    expect(rows(b)).toEqual([]);
  });

  it("a rider's next batch waits until its answers are in (a rider writes once), then goes on its own", async () => {
    const wire = makeWire({ maxConnections: 1 });
    const x = await busy(wire);
    const a = wire.client({ shared: true });
    await a.send(fe.query("select 'a1'"));
    await a.send(fe.query("select 'a2'"));
    const [backend] = wire.driver.backends;
    expect(backend!.log).toEqual(["Q:sleep", "Q:select 'a1'"]);
    await resumeAll(wire);
    expect(x.types()).toBe("C Z");
    expect(rows(a)).toEqual(["a1", "a2"]);
    expect(a.closed).toBe(false);
    expect(wire.pool.stats().leased).toBe(0);
  });

  it("a batch that opens a transaction, runs COPY, changes session state or is not whole never rides; nor does a non-one-shot session", async () => {
    const wire = makeWire({ maxConnections: 1 });
    await busy(wire);
    const batches = [
      fe.query("begin"),
      fe.query("select 1; commit"),
      fe.query("copy in"),
      fe.query("set search_path = x"),
      oneShot("edgepool_s", "select set_config('a', 'b', false)", "x"),
      concat([fe.parse("", "select $1"), fe.bind("", ["x"]), fe.execute()]),
      concat([fe.parse("", "select $1"), fe.bind("", ["x"]), fe.query("select 'q'"), fe.sync()]),
      concat([fe.query("select 'a'"), fe.close("S", "x"), fe.sync()]),
    ];
    const clients = batches.map(() => wire.client({ shared: true, acquireTimeoutMs: 50 }));
    for (const [i, client] of clients.entries()) await client.send(batches[i]!);
    const plain = wire.client({ acquireTimeoutMs: 50 });
    await plain.send(fe.query("select 'plain'"));
    expect(wire.pool.stats()).toMatchObject({ pipelined: 0, waiting: clients.length + 1 });
    await wire.clock.advance(100);
  });

  it("a one-shot session inside a transaction does not ride", async () => {
    const wire = makeWire({ maxConnections: 2 });
    const t = wire.client({ shared: true });
    await t.send(fe.query("begin"));
    await busy(wire);
    await t.send(fe.query("select 't'"));
    expect(wire.pool.stats().pipelined).toBe(0);
    expect(rows(t)).toEqual(["t"]);
  });

  it("at most pipelineDepth holders on one backend; the rest wait", async () => {
    const wire = makeWire({ maxConnections: 1, pipelineDepth: 3 });
    await busy(wire);
    const clients = Array.from({ length: 5 }, () => wire.client({ shared: true }));
    for (const [i, client] of clients.entries()) await client.send(fe.query(`select '${i}'`));
    expect(wire.pool.stats()).toMatchObject({ pipelined: 2, waiting: 3 });
    expect(clients.filter((c) => c.session.backend !== undefined)).toHaveLength(2);
    await resumeAll(wire);
    expect(clients.map(rows)).toEqual([["0"], ["1"], ["2"], ["3"], ["4"]]);
    expect(wire.pool.stats().leased).toBe(0);
  });

  it("a rider's cancel waits until the server is on its query (earlier riders' queries are never cancelled)", async () => {
    const wire = makeWire({ maxConnections: 1 });
    const x = await busy(wire);
    const a = wire.client({ shared: true });
    await a.send(fe.query("select 'a'"));
    const [backend] = wire.driver.backends;
    expect(await a.session.cancel()).toBe(true);
    expect(backend!.cancels).toBe(0);
    await x.session.cancel();
    expect(backend!.cancels).toBe(1);
    await resumeAll(wire);
    expect(backend!.cancels).toBe(2);
    expect(rows(a)).toEqual(["a"]);
  });
});

describe("pipeline (one backend, several riders)", () => {
  const decoder = new TextDecoder();

  /** A backend that records what is written and lets the test play the server. */
  function stub(): Backend & { written: string[]; receiver?: Receiver } {
    const b = {
      pid: 1, parameters: new Map(), transactionStatus: "I" as const, statementEpoch: 0,
      written: [] as string[], receiver: undefined as Receiver | undefined,
      async write(bytes: Uint8Array) {
        for (let at = 0; at < bytes.length; at += 1 + readInt32(bytes, at + 1)) b.written.push(String.fromCharCode(bytes[at]!));
      },
      receive(receiver: Receiver | undefined) {
        b.receiver = receiver;
      },
      async cancel() {},
    };
    return b;
  }

  function recorder() {
    const r = { got: [] as string[], flushes: 0, closed: undefined as Error | undefined };
    const receiver: Receiver = {
      message: (type, frame) => void r.got.push(String.fromCharCode(type) + (type === 0x44 ? decoder.decode(frame.subarray(5)) : "")),
      flush: () => void r.flushes++,
      closed: (cause) => void (r.closed = cause),
    };
    return { r, receiver };
  }

  const msg = (type: string) => new Uint8Array([type.charCodeAt(0), 0, 0, 0, 4]);

  it("writes go out in ticket order even when a later rider's bytes are ready first; one read is split at each rider's last ReadyForQuery", async () => {
    const backend = stub();
    const lease = {};
    const one = recorder();
    const two = recorder();
    const r1 = Pipeline.join(lease, backend, one.receiver);
    const r2 = Pipeline.join(lease, backend, two.receiver);
    const w2 = r2.pipeline.write(r2, [fe.query("select 'two'")]);
    await flush();
    expect(backend.written).toEqual([]);
    await r1.pipeline.write(r1, [concat([fe.parse("", "select 1"), fe.bind("", []), fe.execute(), fe.sync()]), fe.query("select 'one'")]);
    await w2;
    expect(backend.written).toEqual(["P", "B", "E", "S", "Q", "Q"]);
    // One read carrying both riders' answers (DataRow bodies are not decoded by the pipeline).
    const server = backend.receiver!;
    for (const t of ["1", "2", "C", "Z", "T", "C", "Z", "T", "D", "C", "Z"]) server.message(t.charCodeAt(0), t === "D" ? concat([msg("D"), new TextEncoder().encode("2")]) : msg(t));
    await server.flush();
    expect(one.r.got).toEqual(["1", "2", "C", "Z", "T", "C", "Z"]);
    expect(two.r.got).toEqual(["T", "D2", "C", "Z"]);
    expect([one.r.flushes, two.r.flushes]).toEqual([1, 1]);
  });

  it("a rider that leaves without writing lets the riders behind it go; the last one to leave detaches the pipeline", async () => {
    const backend = stub();
    const lease = {};
    const one = recorder();
    const two = recorder();
    const r1 = Pipeline.join(lease, backend, one.receiver);
    const r2 = Pipeline.join(lease, backend, two.receiver);
    const w2 = r2.pipeline.write(r2, [fe.query("select 2")]);
    r1.pipeline.leave(r1);
    await w2;
    expect(backend.written).toEqual(["Q"]);
    backend.receiver!.message(0x5a, msg("Z"));
    expect(two.r.got).toEqual(["Z"]);
    r2.pipeline.leave(r2);
    expect(backend.receiver).toBeUndefined();
    // A new rider on the same lease starts a new pipeline.
    const three = recorder();
    Pipeline.join(lease, backend, three.receiver);
    expect(backend.receiver).toBeDefined();
  });

  it("a closed connection reaches every rider; a write not yet sent fails", async () => {
    const backend = stub();
    const lease = {};
    const riders = [recorder(), recorder(), recorder()];
    const [r1, r2, r3] = riders.map((r) => Pipeline.join(lease, backend, r.receiver));
    await r1!.pipeline.write(r1!, [fe.query("select 1")]);
    const w3 = r3!.pipeline.write(r3!, [fe.query("select 3")]);
    backend.receiver!.closed(new Error("gone"));
    await expect(w3).rejects.toThrow("gone");
    expect(riders.map((r) => r.r.closed?.message)).toEqual(["gone", "gone", "gone"]);
    expect(backend.written).toEqual(["Q"]);
    void r2;
  });

  it("once every rider got its answers, a notice is dropped and anything else gives the connection up", async () => {
    const backend = stub();
    const one = recorder();
    const r1 = Pipeline.join({}, backend, one.receiver);
    await r1.pipeline.write(r1, [fe.query("select 1")]);
    backend.receiver!.message(0x5a, msg("Z"));
    backend.receiver!.message(0x4e, msg("N"));
    expect(one.r.got).toEqual(["Z"]);
    expect(one.r.closed).toBeUndefined();
    backend.receiver!.message(0x43, msg("C"));
    expect(one.r.closed?.message).toMatch(/unexpected message \(type C\)/);
  });
});
