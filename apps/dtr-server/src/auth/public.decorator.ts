import { SetMetadata } from '@nestjs/common';

export const IS_PUBLIC = 'dtr:isPublic';

/** Opts a route out of the global session guard (launch, callback, JWKS, health, public docs only). */
export const Public = () => SetMetadata(IS_PUBLIC, true);
