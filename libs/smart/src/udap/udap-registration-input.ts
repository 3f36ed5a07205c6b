import { DtrError } from '@dtr/kernel';
import { z } from 'zod';

/**
 * What an operator asks for when registering one of our identities with a UDAP server (CLI flags and admin API body
 * alike). Defaults for the client name, contact and logo come from configuration.
 */
const udapRegisterInputSchema = z
  .object({
    /** The SAN URI of our certificate to register as; a cancellation may omit it (the stored one is used). */
    san: z.url().max(500).optional(),
    community: z.url().max(500).optional(),
    clientName: z.string().min(1).max(200).optional(),
    contacts: z
      .array(z.string().regex(/^mailto:[^\s@]+@[^\s@]+$/, 'each contact is a mailto: URI (mailto:ops@example.org)'))
      .min(1)
      .max(5)
      .optional(),
    logoUri: z.url().max(500).optional(),
    scopes: z
      .array(z.string().regex(/^[\x21\x23-\x5b\x5d-\x7e]+$/, 'scopes are space-free tokens'))
      .min(1)
      .optional(),
    cancel: z.boolean().default(false),
  })
  .strict()
  .superRefine((input, ctx) => {
    if (!input.cancel && !input.san)
      ctx.addIssue({
        code: 'custom',
        path: ['san'],
        message: 'is required (the SAN URI of our certificate to register as)',
      });
  });

export type UdapRegisterInput = z.infer<typeof udapRegisterInputSchema>;

/** Configuration defaults of a software statement. */
export interface UdapStatementDefaults {
  clientName: string;
  contacts: string[];
  logoUri?: string;
}

/** Parses a registration request; INVALID_INPUT naming the field. */
export function parseUdapRegisterInput(input: unknown): UdapRegisterInput {
  const parsed = udapRegisterInputSchema.safeParse(input);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new DtrError('INVALID_INPUT', `${issue.path.join('.') || 'registration'}: ${issue.message}`, {
      expression: parsed.error.issues.map((i) => i.path.join('.') || 'registration'),
    });
  }
  return parsed.data;
}

/** The contacts to send: the request's, else configuration's; a registration without one is refused. */
export function contactsOf(input: UdapRegisterInput, defaults: UdapStatementDefaults): string[] {
  const contacts = input.contacts ?? defaults.contacts;
  if (contacts.length === 0)
    throw new DtrError(
      'INVALID_INPUT',
      'contacts: a UDAP software statement needs a contact (--contact mailto:… or DTR_UDAP_CONTACT)',
      { expression: ['contacts'] },
    );
  return contacts;
}
