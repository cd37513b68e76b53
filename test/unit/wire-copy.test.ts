import { describe, expect, it } from "vitest";
import { fe, leasedPids, makeWire } from "./wire-helpers.ts";

describe("COPY", () => {
  it("COPY FROM STDIN: the client's CopyData/CopyDone reach the server; the backend is kept until the copy ends", async () => {
    const wire = makeWire();
    const c = wire.client();
    await c.send(fe.query("copy in"));
    expect(c.types()).toBe("G");
    expect(leasedPids(wire)).toHaveLength(1);
    await c.send(fe.copyData("1\n"), fe.copyData("2\n"));
    await c.send(fe.copyData("3\n"), fe.copyDone());
    expect(c.types()).toBe("G C Z");
    expect(c.received[1]!.text).toBe("COPY 3");
    expect(leasedPids(wire)).toEqual([]);
  });

  it("CopyFail ends the copy with the server's error", async () => {
    const wire = makeWire();
    const c = wire.client();
    await c.send(fe.query("copy in"), fe.copyData("1\n"), fe.copyFail("nope"));
    expect(c.types()).toBe("G E Z");
    expect(leasedPids(wire)).toEqual([]);
  });

  it("COPY FROM STDIN over the extended protocol (the Sync sent during the copy gets no answer of its own)", async () => {
    const wire = makeWire();
    const c = wire.client();
    await c.send(fe.parse("", "copy in"), fe.bind(""), fe.execute(), fe.sync());
    expect(c.types()).toBe("1 2 G");
    expect(leasedPids(wire)).toHaveLength(1);
    await c.send(fe.copyData("x\n"), fe.copyDone(), fe.sync());
    expect(c.types()).toBe("1 2 G C Z");
    expect(leasedPids(wire)).toEqual([]);
    let answered = false;
    void c.session.answered().then(() => (answered = true));
    await wire.clock.advance(0);
    expect(answered).toBe(true);
  });

  it("COPY TO STDOUT streams through", async () => {
    const wire = makeWire();
    const c = wire.client();
    await c.send(fe.query("copy out"));
    expect(c.types()).toBe("H d d c C Z");
    expect(leasedPids(wire)).toEqual([]);
  });
});
