// What one untrusted client can make the coordinator do with malformed or hostile protocol bytes: framing limits,
// parser bounds, regex cost, and the state it may touch on a shared server connection.
import { describe, expect, it } from "vitest";
import { FrameReader, MAX_MESSAGE_LENGTH, parseParse, ProtocolViolation } from "../../worker/wire/messages.ts";
import { fe, makeWire } from "./wire-helpers.ts";

const header = (type: string, length: number) => {
  const out = new Uint8Array(5);
  out[0] = type.charCodeAt(0);
  new DataView(out.buffer).setInt32(1, length);
  return out;
};

describe("client framing", () => {
  it("a message split anywhere is reassembled; one declared longer than MAX_MESSAGE_LENGTH is refused", () => {
    const query = fe.query("select 'split'");
    for (let cut = 1; cut < query.length; cut++) {
      const reader = new FrameReader(false);
      const frames = [...reader.read(query.subarray(0, cut)), ...reader.read(query.subarray(cut))];
      expect(frames.map((f) => [...f.frame])).toEqual([[...query]]);
    }
    expect(() => new FrameReader(false).read(header("Q", MAX_MESSAGE_LENGTH + 1))).toThrow(ProtocolViolation);
  });

  it("memory follows the bytes a client sent, not the length it declared", () => {
    const reader = new FrameReader(false);
    const before = process.memoryUsage().arrayBuffers;
    // 64 MiB declared, 1 KiB sent: nothing of its size is allocated until the last byte comes.
    reader.read(header("Q", MAX_MESSAGE_LENGTH));
    reader.read(new Uint8Array(1024));
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(1024 * 1024);
    expect(reader.pending).toBe(true);
  });

  it("a Parse naming more parameter types than it carries is a protocol violation, not 65,535 zeros", () => {
    const parse = new Uint8Array([0x50, 0, 0, 0, 10, 0x73, 0, 0x31, 0, 0xff, 0xff]);
    expect(() => parseParse(parse)).toThrow(ProtocolViolation);
    expect(parseParse(fe.parse("s", "select $1", [25])).types).toEqual([25]);
  });

  it("a DEALLOCATE padded with 100,000 spaces is matched in linear time", async () => {
    const wire = makeWire();
    const c = wire.client();
    const started = performance.now();
    await c.send(fe.query(`deallocate a${" ".repeat(100_000)}b`));
    expect(performance.now() - started).toBeLessThan(500);
    expect(c.types()).toContain("Z");
  });
});

describe("a shared server connection", () => {
  it("a Close or DEALLOCATE of the coordinator's own statement names never reaches the server: another session's statement stays", async () => {
    const wire = makeWire({ maxConnections: 1 });
    const a = wire.client();
    await a.send(fe.parse("mine", "select $1"), fe.bind("mine", ["a"]), fe.execute(), fe.sync());
    const backend = wire.driver.backends[0]!;
    expect([...backend.statements.keys()]).toEqual(["edgepool_1"]);
    const b = wire.client();
    await b.send(fe.close("S", "edgepool_1"), fe.sync());
    await b.send(fe.query("deallocate edgepool_1"));
    expect(b.received.filter((m) => m.type === "E")).toEqual([]);
    expect([...backend.statements.keys()]).toEqual(["edgepool_1"]);
    a.clear();
    await a.send(fe.bind("mine", ["again"]), fe.execute(), fe.sync());
    expect(a.received.filter((m) => m.type === "D").map((m) => m.text)).toEqual(["again"]);
  });

  it("a SET hidden behind a comment still has the connection reset before anyone else gets it (the server's command tag says so)", async () => {
    const wire = makeWire({ maxConnections: 1 });
    const c = wire.client();
    await c.send(fe.query("/* hidden */ SET search_path TO evil"));
    expect(wire.driver.resets).toEqual([wire.driver.backends[0]!.pid]);
  });
});
