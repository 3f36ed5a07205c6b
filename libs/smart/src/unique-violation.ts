/** Whether a database error is PostgreSQL's unique_violation (23505), as the driver or TypeORM wraps it. */
export function isUniqueViolation(error: unknown): boolean {
  const e = error as { driverError?: { code?: string }; code?: string } | undefined;
  return (e?.driverError?.code ?? e?.code) === '23505';
}
