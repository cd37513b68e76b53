import { Buffer } from "node:buffer";
import { serialize } from "pg-protocol";
import type { BackendMessage, CommandCompleteMessage, DataRowMessage, DatabaseError as ErrorMessage, RowDescriptionMessage } from "pg-protocol/dist/messages";
import { Parser } from "pg-protocol/dist/parser";
import types from "pg-types";
import { DatabaseError, isPoolErrorCode, PoolError } from "./errors.ts";
import type { Column, Result } from "./result.ts";

/**
 * The built-in client's side of the wire protocol: a query becomes one batch of
 * protocol bytes, and the coordinator's answer (forwarded, never decoded there)
 * becomes a postgres.js-like result in the caller.
 */

/** Texts longer than this go unnamed: the coordinator would keep a long text per server connection for little gain. */
const MAX_NAMED_TEXT = 8192;

/** Parse messages by text: a hot statement is hashed and framed once. Cleared when full rather than tracked LRU. */
const parses = new Map<string, { name: string; bytes: Uint8Array }>();
const MAX_CACHED_PARSES = 256;

const SYNC = serialize.sync();
const DESCRIBE_PORTAL = serialize.describe({ type: "P" });
const EXECUTE = serialize.execute({});

/**
 * One batch for `text` with `params`: the simple Query message when there are
 * none (so multi-statement scripts run), otherwise Parse (named after the text,
 * so the coordinator can reuse a server-side statement) + Bind (text params) +
 * Describe portal + Execute + Sync.
 */
export function encodeQuery(text: string, params: readonly unknown[] = []): Uint8Array {
  if (params.length === 0) return serialize.query(text);
  const parse = parseMessage(text);
  return Buffer.concat([
    parse.bytes,
    serialize.bind({ statement: parse.name, values: params.map(toText) }),
    DESCRIBE_PORTAL,
    EXECUTE,
    SYNC,
  ]);
}

function parseMessage(text: string): { name: string; bytes: Uint8Array } {
  let parse = parses.get(text);
  if (parse) return parse;
  const name = text.length <= MAX_NAMED_TEXT ? statementName(text) : "";
  parse = { name, bytes: serialize.parse({ name, text }) };
  if (name) {
    if (parses.size >= MAX_CACHED_PARSES) parses.clear();
    parses.set(text, parse);
  }
  return parse;
}

/** `edgepool_` + a 64-bit hash of the text: stable across isolates, so every caller names a text alike. */
export function statementName(text: string): string {
  // cyrb53's mixing, kept to two 32-bit halves.
  let h1 = 0xdeadbeef;
  let h2 = 0x41c6ce57;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 2654435761);
    h2 = Math.imul(h2 ^ c, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return `edgepool_${(h1 >>> 0).toString(16).padStart(8, "0")}${(h2 >>> 0).toString(16).padStart(8, "0")}`;
}

/** A parameter in Postgres' text format (node-postgres' `prepareValue` rules); null stays null. */
export function toText(value: unknown): string | null {
  if (value === null || value === undefined) return null;
  switch (typeof value) {
    case "string": return value;
    case "number": case "bigint": return String(value);
    case "boolean": return value ? "true" : "false";
  }
  if (value instanceof Date) return value.toISOString();
  if (value instanceof Uint8Array) return `\\x${hex(value)}`;
  if (value instanceof ArrayBuffer) return `\\x${hex(new Uint8Array(value))}`;
  if (Array.isArray(value)) return arrayLiteral(value);
  return JSON.stringify(value);
}

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex");
}

function arrayLiteral(values: readonly unknown[]): string {
  const parts = values.map((v) => {
    if (v === null || v === undefined) return "NULL";
    if (Array.isArray(v)) return arrayLiteral(v);
    // bytea elements are quoted, so their backslash is doubled like any other.
    const text = v instanceof Uint8Array ? `\\x${hex(v)}` : toText(v)!;
    return `"${text.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;
  });
  return `{${parts.join(",")}}`;
}

type ValueParser = (text: string) => unknown;

const asText: ValueParser = (text) => text;
const stringArray: ValueParser = types.getTypeParser(1009 as number, "text");

/**
 * What postgres.js (today's coordinator driver) parses, parsed here with pg-types:
 * bool, bytea, int2/int4/oid, float4/float8, json/jsonb, date/timestamp/timestamptz,
 * and arrays of them. int8 and numeric stay strings (no precision lost); arrays of
 * other built-in types are string arrays, as postgres.js' fetched array types give.
 */
const PARSERS = new Map<number, ValueParser>();
for (const oid of [16, 17, 21, 23, 26, 700, 701, 114, 3802, 1082, 1114, 1184, 1000, 1001, 1005, 1007, 1028, 1021, 1022, 199, 3807, 1182, 1115, 1185]) {
  PARSERS.set(oid, types.getTypeParser(oid, "text"));
}
// text, varchar, bpchar, char, name, int8, numeric, uuid, time, timetz, interval, inet, cidr, macaddr, xml, bit, varbit, tsrange/tstzrange/daterange/int4range/int8range/numrange arrays.
for (const oid of [1009, 1015, 1014, 1002, 1003, 1016, 1231, 2951, 1183, 1270, 1187, 1041, 651, 1040, 143, 1561, 1563, 3909, 3911, 3913, 3905, 3927, 3907]) {
  PARSERS.set(oid, stringArray);
}

/**
 * Decodes the answer to one `encodeQuery` batch (everything up to ReadyForQuery)
 * into the last statement's result. An ErrorResponse whose message starts with a
 * pool error code throws that `PoolError`; any other throws `DatabaseError`.
 */
export function decodeResult<Row = Record<string, unknown>>(bytes: Uint8Array, tenant: string): Result<Row> {
  let columns: Column[] = [];
  let parsers: ValueParser[] = [];
  let rows: Row[] = [];
  let last: Result<Row> | undefined;
  let failure: ErrorMessage | undefined;
  new Parser().parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), (message: BackendMessage) => {
    switch (message.name) {
      case "rowDescription": {
        const fields = (message as RowDescriptionMessage).fields;
        columns = fields.map((f) => ({ name: f.name, type: f.dataTypeID }));
        parsers = fields.map((f) => PARSERS.get(f.dataTypeID) ?? asText);
        rows = [];
        break;
      }
      case "dataRow":
        rows.push(DataRow(message as DataRowMessage, columns, parsers) as Row);
        break;
      case "commandComplete":
        last = CommandComplete(message as CommandCompleteMessage, rows, columns);
        columns = [];
        rows = [];
        break;
      case "emptyQuery":
        last = Object.assign([] as Row[], { count: 0, command: "", columns: [] });
        break;
      case "error":
        failure ??= message as ErrorMessage;
        break;
    }
  });
  if (failure) throw ErrorResponse(failure, tenant);
  return last ?? Object.assign([] as Row[], { count: 0, command: "", columns: [] });
}

function DataRow(message: DataRowMessage, columns: Column[], parsers: ValueParser[]): Record<string, unknown> {
  const row: Record<string, unknown> = {};
  const fields = message.fields as (string | null)[];
  for (let i = 0; i < fields.length; i++) {
    const value = fields[i];
    row[columns[i]!.name] = value === null ? null : parsers[i]!(value!);
  }
  return row;
}

/** `SELECT 3` → command "SELECT", count 3; `INSERT 0 1` → "INSERT", 1; `CREATE TABLE` → that, count = rows. */
function CommandComplete<Row>(message: CommandCompleteMessage, rows: Row[], columns: Column[]): Result<Row> {
  const match = /^(.*?)(?: \d+)*$/.exec(message.text)!;
  const tail = message.text.slice(match[1]!.length).trim().split(" ");
  const count = tail[0] ? Number(tail[tail.length - 1]) : rows.length;
  return Object.assign(rows, { count, command: match[1]!, columns });
}

function ErrorResponse(message: ErrorMessage, tenant: string): PoolError | DatabaseError {
  const text = message.message;
  const code = /^([A-Z_]+): /.exec(text)?.[1];
  if (isPoolErrorCode(code)) {
    const error = new PoolError(code, tenant, "");
    error.message = text;
    return error;
  }
  return new DatabaseError(text, {
    code: message.code ?? "",
    severity: message.severity,
    detail: message.detail,
    hint: message.hint,
    position: message.position,
    schema_name: message.schema,
    table_name: message.table,
    column_name: message.column,
    constraint_name: message.constraint,
    where: message.where,
    routine: message.routine,
  });
}
