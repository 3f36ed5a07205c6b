import { EhrRegistrationEntity, EhrTenantEntity } from '@dtr/smart';

/** Every TypeORM entity of the application, listed explicitly (no globs): the server and the CLI use this list. */
export const ENTITIES = [EhrTenantEntity, EhrRegistrationEntity];
