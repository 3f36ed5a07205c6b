import { Body, Controller, Delete, Get, HttpCode, Param, Post, Query } from '@nestjs/common';
import { ApiOperation } from '@nestjs/swagger';
import { DtrError } from '@dtr/kernel';
import { type Payer, PayerUdapRegistration } from '@dtr/payer';
import {
  type TenantView,
  TenantUdapRegistration,
  type TrustAnchorView,
  type UdapCertificateInput,
  type UdapCertificateView,
  UdapIdentityStore,
  type UdapRegistrationResult,
} from '@dtr/smart';
import { z } from 'zod';
import { AdminOnly } from './admin-only.decorator.js';

const pem = (label: string, pattern: RegExp, max = 50_000) => z.string().max(max).regex(pattern, `a PEM ${label}`);

/** A certificate as PEM texts, or a PKCS#12 file (base64) with its passphrase. Never echoed, never logged. */
const certificateBody = z.union([
  z
    .object({
      certificatePem: pem('certificate', /-----BEGIN CERTIFICATE-----/),
      privateKeyPem: pem('private key', /-----BEGIN [A-Z ]*PRIVATE KEY-----/),
      chainPem: pem('certificate chain', /-----BEGIN CERTIFICATE-----/).optional(),
    })
    .strict(),
  z
    .object({
      pkcs12: z.base64().max(100_000, 'at most 100 000 base64 characters'),
      passphrase: z.string().max(1024),
    })
    .strict(),
]);

const anchorBody = z
  .object({
    community: z.url().max(500),
    pem: pem('CA certificate', /-----BEGIN CERTIFICATE-----/),
  })
  .strict();

function parse<T>(schema: z.ZodType<T>, body: unknown, what: string): T {
  const parsed = schema.safeParse(body);
  if (parsed.success) return parsed.data;
  const issues = parsed.error.issues.flatMap((i) =>
    i.code === 'invalid_union' ? (i.errors[0] ?? []).map((e) => ({ ...e, path: [...i.path, ...e.path] })) : [i],
  );
  const issue = issues[0] ?? parsed.error.issues[0]!;
  throw new DtrError('INVALID_INPUT', `${issue.path.join('.') || what}: ${issue.message}`, {
    expression: issues.map((i) => i.path.join('.') || what),
  });
}

/**
 * UDAP for operators (bearer token, never the browser session): our certificates (keys are write-only: sealed on
 * arrival, never returned), community trust anchors, and our registrations at EHRs and payers.
 */
@AdminOnly()
@Controller('admin/udap')
export class UdapAdminController {
  constructor(
    private readonly identities: UdapIdentityStore,
    private readonly tenants: TenantUdapRegistration,
    private readonly payers: PayerUdapRegistration,
  ) {}

  @Get('certificates')
  @ApiOperation({ summary: 'Our UDAP certificates (SAN URIs, subject, validity; never a key)' })
  certificates(): Promise<UdapCertificateView[]> {
    return this.identities.list();
  }

  @Post('certificates')
  @ApiOperation({
    summary:
      'Add a certificate with its key: {certificatePem, privateKeyPem, chainPem?} or {pkcs12 (base64), passphrase}',
  })
  addCertificate(@Body() body: unknown): Promise<UdapCertificateView> {
    const input = parse(certificateBody, body, 'certificate');
    const material: UdapCertificateInput =
      'pkcs12' in input ? { pkcs12: Buffer.from(input.pkcs12, 'base64'), passphrase: input.passphrase } : input;
    return this.identities.add(material);
  }

  @Delete('certificates/:id')
  @HttpCode(204)
  @ApiOperation({ summary: 'Remove a certificate and its key' })
  async removeCertificate(@Param('id') id: string): Promise<void> {
    if (!(await this.identities.remove(id))) throw new DtrError('NOT_FOUND', `no UDAP certificate ${id}`);
  }

  @Get('anchors')
  @ApiOperation({ summary: 'Trust anchors, by community' })
  anchors(@Query('community') community: unknown): Promise<TrustAnchorView[]> {
    if (community !== undefined && typeof community !== 'string')
      throw new DtrError('INVALID_INPUT', 'community must be one URI');
    return this.identities.listAnchors(community);
  }

  @Post('anchors')
  @ApiOperation({ summary: "Add a community's trust anchor: {community, pem}" })
  addAnchor(@Body() body: unknown): Promise<TrustAnchorView> {
    const input = parse(anchorBody, body, 'anchor');
    return this.identities.addAnchor(input.community, input.pem);
  }

  @Delete('anchors/:id')
  @HttpCode(204)
  @ApiOperation({ summary: 'Remove a trust anchor' })
  async removeAnchor(@Param('id') id: string): Promise<void> {
    if (!(await this.identities.removeAnchor(id))) throw new DtrError('NOT_FOUND', `no trust anchor ${id}`);
  }

  @Post('tenants/:tenantId/:purpose/registration')
  @ApiOperation({
    summary:
      "Register (again: modify; {cancel: true}: cancel) a tenant's supplement or disclose identity with the EHR's UDAP server",
  })
  registerTenant(
    @Param('tenantId') tenantId: string,
    @Param('purpose') purpose: string,
    @Body() body: unknown,
  ): Promise<UdapRegistrationResult & { tenant: TenantView | undefined }> {
    if (purpose !== 'supplement' && purpose !== 'disclose')
      throw new DtrError('INVALID_INPUT', 'purpose must be supplement or disclose');
    return this.tenants.register(tenantId, purpose, body ?? {}, 'admin-api');
  }

  @Post('payers/:payerId/registration')
  @ApiOperation({ summary: "Register (again: modify; {cancel: true}: cancel) us with a payer's UDAP server" })
  registerPayer(
    @Param('payerId') payerId: string,
    @Body() body: unknown,
  ): Promise<UdapRegistrationResult & { payer: Payer }> {
    return this.payers.register(payerId, body ?? {}, 'admin-api');
  }
}
