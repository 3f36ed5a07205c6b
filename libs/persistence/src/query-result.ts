/**
 * Rows of a raw query. TypeORM's postgres driver answers `UPDATE/DELETE … RETURNING` with `[rows, affectedCount]`
 * and a SELECT with the rows themselves.
 */
export function rowsOf<T>(result: unknown): T[] {
  if (Array.isArray(result) && result.length === 2 && Array.isArray(result[0]) && typeof result[1] === 'number') {
    return result[0] as T[];
  }
  return Array.isArray(result) ? (result as T[]) : [];
}
