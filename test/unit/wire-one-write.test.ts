import { describe, expect, it } from "vitest";
import { ONE_WRITE_MAX_BYTES } from "../../worker/wire/backend.ts";
import { fe, makeWire, type Wire } from "./wire-helpers.ts";

/** Records the size of every write the session makes to the wire's first backend from now on. */
function writesTo(wire: Wire): number[] {
  const backend = wire.driver.backends[0]!;
  const sizes: number[] = [];
  const write = backend.write.bind(backend);
  backend.write = (bytes) => {
    sizes.push(bytes.length);
    return write(bytes);
  };
  return sizes;
}

describe("one write per batch to the server", () => {
  it("a batch whose Bind names a prepared statement (rewritten to the server-side name) reaches the server as one write", async () => {
    const wire = makeWire({ maxConnections: 1 });
    const c = wire.client();
    await c.send(fe.parse("P_0", "select $1"), fe.sync());
    const sizes = writesTo(wire);
    c.clear();
    // pgbench -M prepared's transaction: Bind, Describe portal, Execute, Sync in one chunk.
    await c.send(fe.bind("P_0", ["x"]), fe.describe("P", ""), fe.execute(), fe.sync());
    expect(c.types()).toBe("2 T D C Z");
    expect(wire.driver.backends[0]!.log.slice(-4)).toEqual(["B:edgepool_1", "D:P:", "E", "S"]);
    expect(sizes).toHaveLength(1);
  });

  it("a statement injected ahead of the client's batch (Parse on a backend that lacks it) goes in the same write", async () => {
    const wire = makeWire({ maxConnections: 1 });
    const c = wire.client();
    await c.send(fe.query("select 1"));
    const sizes = writesTo(wire);
    c.clear();
    await c.send(fe.parse("s", "select $1"), fe.bind("s", ["y"]), fe.execute(), fe.sync());
    expect(c.types()).toBe("1 2 D C Z");
    expect(sizes).toHaveLength(1);
  });

  it(`a batch over ${ONE_WRITE_MAX_BYTES} bytes is written piece by piece, not copied`, async () => {
    const wire = makeWire({ maxConnections: 1 });
    const c = wire.client();
    await c.send(fe.parse("big", "select $1"), fe.sync());
    const sizes = writesTo(wire);
    c.clear();
    await c.send(fe.bind("big", ["x".repeat(ONE_WRITE_MAX_BYTES)]), fe.execute(), fe.sync());
    expect(c.types()).toBe("2 D C Z");
    expect(sizes.length).toBeGreaterThan(1);
    expect(sizes.reduce((n, s) => n + s, 0)).toBeGreaterThan(ONE_WRITE_MAX_BYTES);
  });
});
