/** A column of a result, as Postgres describes it (`type` is the type OID). */
export interface Column {
  name: string;
  type: number;
}

/** A query result as it crosses RPC. */
export interface QueryResult<Row = Record<string, unknown>> {
  rows: Row[];
  count: number;
  command: string;
  columns: Column[];
}

/** Rows with `count`, `command` and `columns`, like a postgres.js result. */
export type Result<Row = Record<string, unknown>> = Row[] & {
  count: number;
  command: string;
  columns: Column[];
};

/** Turns the RPC value into a postgres.js-like result array. */
export function toResult<Row>(value: QueryResult<Row>): Result<Row> {
  return Object.assign(value.rows, { count: value.count, command: value.command, columns: value.columns });
}
