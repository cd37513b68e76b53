import { describe, expect, test } from "vitest";
import { ScramSha256 } from "../../worker/server/scram.ts";

// RFC 7677 §3: user "user", password "pencil", client nonce fixed.
const CLIENT_NONCE = "rOprNGfwEbeRWgbNEkqO";
const SERVER_FIRST = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
const CLIENT_FINAL = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
const SERVER_FINAL = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

describe("SCRAM-SHA-256 client", () => {
  test("produces the RFC 7677 example exchange and accepts its server signature", async () => {
    const scram = new ScramSha256("pencil", { nonce: CLIENT_NONCE, user: "user" });
    expect(scram.clientFirstMessage).toBe(`n,,n=user,r=${CLIENT_NONCE}`);
    expect(await scram.clientFinalMessage(SERVER_FIRST)).toBe(CLIENT_FINAL);
    expect(() => scram.verifyServerFinal(SERVER_FINAL)).not.toThrow();
  });

  test("rejects a server signature that does not match", async () => {
    const scram = new ScramSha256("pencil", { nonce: CLIENT_NONCE, user: "user" });
    await scram.clientFinalMessage(SERVER_FIRST);
    expect(() => scram.verifyServerFinal("v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")).toThrow(/signature does not match/);
  });

  test("rejects a server nonce that does not extend the client's", async () => {
    const scram = new ScramSha256("pencil", { nonce: CLIENT_NONCE, user: "user" });
    await expect(scram.clientFinalMessage("r=someoneElse,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")).rejects.toThrow(/nonce/);
  });

  test("reports a server-final error attribute", async () => {
    const scram = new ScramSha256("pencil", { nonce: CLIENT_NONCE, user: "user" });
    await scram.clientFinalMessage(SERVER_FIRST);
    expect(() => scram.verifyServerFinal("e=invalid-proof")).toThrow(/invalid-proof/);
  });

  test("sends an empty user name by default, as libpq does (Postgres reads the user from the startup)", () => {
    expect(new ScramSha256("x", { nonce: "abc" }).clientFirstMessage).toBe("n,,n=,r=abc");
  });
});
