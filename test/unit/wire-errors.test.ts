import { describe, expect, it } from "vitest";
import { PoolError, type PoolErrorCode } from "../../src/errors.ts";
import { toErrorResponse } from "../../worker/wire/errors.ts";
import { parseFields } from "../../worker/wire/messages.ts";
import { fe, leasedPids, makeWire } from "./wire-helpers.ts";

describe("pool errors as ErrorResponse", () => {
  it.each([
    ["ACQUIRE_TIMEOUT", "53300", "ERROR"], ["WAIT_QUEUE_FULL", "53300", "ERROR"], ["QUERY_TIMEOUT", "57014", "ERROR"],
    ["CONNECT_FAILED", "08001", "ERROR"], ["LEASE_EXPIRED", "08006", "FATAL"], ["LEASE_LOST", "08006", "FATAL"],
    ["POOL_DISABLED", "08004", "FATAL"], ["POOL_CLOSED", "08004", "FATAL"], ["UNKNOWN_TENANT", "08004", "FATAL"],
    ["UNAUTHORIZED", "28000", "FATAL"], ["BAD_REQUEST", "08P01", "FATAL"], ["INTERNAL", "XX000", "FATAL"],
  ] as const)("%s → SQLSTATE %s, %s, message starting with the code", (code, sqlstate, severity) => {
    const { bytes, fatal } = toErrorResponse(new PoolError(code as PoolErrorCode, "acme", "detail"));
    const fields = parseFields(bytes);
    expect(fields.get("C")).toBe(sqlstate);
    expect(fields.get("S")).toBe(severity);
    expect(fields.get("V")).toBe(severity);
    expect(fields.get("M")).toBe(`${code}: detail`);
    expect(fatal).toBe(severity === "FATAL");
  });

  it("ACQUIRE_TIMEOUT: 53300 for the extended batch, messages skipped to its Sync, ReadyForQuery I; the session stays usable", async () => {
    const wire = makeWire({ maxConnections: 1 });
    const holder = wire.client();
    await holder.send(fe.query("begin"));
    const c = wire.client({ acquireTimeoutMs: 100 });
    await c.send(fe.parse("", "select $1"), fe.bind("", ["1"]), fe.execute(), fe.sync());
    expect(wire.stats.clientsWaiting).toBe(1);
    await wire.clock.advance(100);
    expect(c.types()).toBe("E Z");
    expect(c.received[0]!.fields!.get("C")).toBe("53300");
    expect(c.received[0]!.fields!.get("S")).toBe("ERROR");
    expect(c.received[0]!.text).toMatch(/^ACQUIRE_TIMEOUT: /);
    expect(c.received[1]!.text).toBe("I");
    expect(c.closed).toBe(false);
    expect(wire.stats.clientsWaiting).toBe(0);
    await holder.send(fe.query("commit"));
    c.clear();
    await c.send(fe.query("select 'after'"));
    expect(c.types()).toBe("T D C Z");
  });

  it("ACQUIRE_TIMEOUT on a simple Query: ErrorResponse then ReadyForQuery", async () => {
    const wire = makeWire({ maxConnections: 1 });
    await wire.client().send(fe.query("begin"));
    const c = wire.client({ acquireTimeoutMs: 50 });
    await c.send(fe.query("select 'x'"), fe.query("select 'y'"));
    await wire.clock.advance(50);
    await wire.clock.advance(50);
    expect(c.types()).toBe("E Z E Z");
  });

  it("POOL_DISABLED is FATAL 08004 and closes the session", async () => {
    const wire = makeWire({ maxConnections: 0 });
    const c = wire.client();
    await c.send(fe.query("select 1"));
    expect(c.types()).toBe("E");
    expect(c.received[0]!.fields!.get("C")).toBe("08004");
    expect(c.closed).toBe(true);
  });

  it("session mode: no connection at startup ends the session (FATAL even for 53300)", async () => {
    const wire = makeWire({ maxConnections: 1 });
    await wire.client().send(fe.query("begin"));
    const c = wire.client({ mode: "session", startup: true, acquireTimeoutMs: 10 });
    await c.send(fe.startup({ user: "u" }));
    await wire.clock.advance(10);
    expect(c.types()).toBe("E");
    expect(c.received[0]!.fields!.get("C")).toBe("53300");
    expect(c.received[0]!.fields!.get("S")).toBe("FATAL");
    expect(c.closed).toBe(true);
  });

  it("a database error is forwarded as the server sent it and the connection goes back reset", async () => {
    const wire = makeWire();
    const c = wire.client();
    await c.send(fe.parse("", "fail"), fe.bind(""), fe.execute(), fe.sync());
    expect(c.types()).toBe("1 2 E Z");
    expect(c.received[2]!.fields!.get("C")).toBe("42000");
    await wire.clock.advance(0);
    expect(leasedPids(wire)).toEqual([]);
    expect(wire.driver.resets).toHaveLength(1);
  });
});

describe("LISTEN in transaction mode", () => {
  it("is refused with a clear ERROR 0A000 and ReadyForQuery; the session stays usable", async () => {
    const wire = makeWire();
    const c = wire.client();
    await c.send(fe.query("listen ch"));
    expect(c.types()).toBe("E Z");
    const e = c.received[0]!;
    expect(e.fields!.get("C")).toBe("0A000");
    expect(e.fields!.get("S")).toBe("ERROR");
    expect(e.text).toMatch(/^BAD_REQUEST: LISTEN needs a session-mode connection/);
    expect(wire.driver.backends[0]?.log.some((l) => l.startsWith("Q:")) ?? false).toBe(false);
    expect(c.closed).toBe(false);
    c.clear();
    await c.send(fe.query("select 'next'"));
    expect(c.types()).toBe("T D C Z");
  });
});
