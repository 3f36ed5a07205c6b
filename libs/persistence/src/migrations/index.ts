import type { MigrationInterface } from 'typeorm';
import { InitialSchema1763800000000 } from './1763800000000-initial-schema.js';
import { SmartLaunch1763900000000 } from './1763900000000-smart-launch.js';

/** Every migration, in order. Explicit on purpose: no globs (see STACK.md). */
export const MIGRATIONS: Array<new () => MigrationInterface> = [InitialSchema1763800000000, SmartLaunch1763900000000];
