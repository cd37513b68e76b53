import { describe, expect, test } from "vitest";
import { parseServerUrl, target } from "../../worker/server/config.ts";

describe("parseServerUrl", () => {
  test("reads host, port, user, percent-decoded password and database; sslmode defaults to prefer as in libpq", () => {
    expect(parseServerUrl("postgres://alice:p%40ss%2Fw%3Ard@db.example.com:6543/shop")).toEqual({
      host: "db.example.com", port: 6543, user: "alice", password: "p@ss/w:rd", database: "shop", sslmode: "prefer",
    });
  });

  test("a libpq password query parameter is the password (it wins over the authority's)", () => {
    expect(parseServerUrl("postgres://u@h/db?password=s%26cret&sslmode=disable")).toMatchObject({ user: "u", password: "s&cret", sslmode: "disable" });
    expect(parseServerUrl("postgres://u:old@h/db?password=new").password).toBe("new");
  });

  test("port 5432 and the database named after the user by default; postgresql:// accepted", () => {
    expect(parseServerUrl("postgresql://bob@localhost")).toMatchObject({ port: 5432, database: "bob", password: "" });
  });

  test("an IPv6 host loses its brackets, and target() puts them back", () => {
    const config = parseServerUrl("postgres://u:p@[::1]:5433/db");
    expect(config.host).toBe("::1");
    expect(target(config)).toBe("[::1]:5433");
  });

  test.each(["disable", "prefer", "require", "verify-ca", "verify-full"] as const)("sslmode=%s is taken as is", (mode) => {
    expect(parseServerUrl(`postgres://u:p@h/db?sslmode=${mode}`).sslmode).toBe(mode);
  });

  test("ssl=true means require, ssl=false disable; an explicit sslmode wins", () => {
    expect(parseServerUrl("postgres://u:p@h/db?ssl=true").sslmode).toBe("require");
    expect(parseServerUrl("postgres://u:p@h/db?ssl=false").sslmode).toBe("disable");
    expect(parseServerUrl("postgres://u:p@h/db?ssl=true&sslmode=verify-full").sslmode).toBe("verify-full");
  });

  test.each([
    ["postgres://u:TopSecret1@h/db?sslmode=allow", /INVALID_OPTION: connection string: sslmode "allow" is not one of disable, prefer, require, verify-ca, verify-full/],
    ["postgres://u:TopSecret1@h/db?ssl=maybe", /ssl "maybe" is not one of/],
    ["mysql://u:TopSecret1@h/db", /must start with postgres:\/\//],
    ["postgres://u:TopSecret1@h:99999/db", /not a valid URL/],
    ["postgres://u:TopSecret1%@h/db", /password is not valid percent-encoding/],
    ["postgres://:TopSecret1@h/db", /no user name/],
  ])("a bad connection string is refused with a clear error that never contains the password (%#)", (url, message) => {
    let error: Error | undefined;
    try {
      parseServerUrl(url);
    } catch (e) {
      error = e as Error;
    }
    expect(error?.message).toMatch(message);
    expect(`${error?.message} ${error?.stack}`).not.toContain("TopSecret1");
  });
});
