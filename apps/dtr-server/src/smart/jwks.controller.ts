import { Controller, Get, Header } from '@nestjs/common';
import { ApiOkResponse, ApiOperation, ApiTags } from '@nestjs/swagger';
import { SigningKeyStore } from '@dtr/smart';
import type { JWK } from 'jose';
import { Public } from '../auth/public.decorator.js';

/** Our public signing keys, for EHRs and payers that verify our private_key_jwt assertions. */
@ApiTags('keys')
@Controller('.well-known')
export class JwksController {
  constructor(private readonly keys: SigningKeyStore) {}

  @Public()
  @Get('jwks.json')
  @Header('Cache-Control', 'public, max-age=300')
  @Header('Content-Type', 'application/jwk-set+json')
  @ApiOperation({ summary: 'Public keys (RS384, ES384) of our active and retiring signing keys' })
  @ApiOkResponse({ description: 'JWK Set' })
  jwks(): Promise<{ keys: JWK[] }> {
    return this.keys.publicJwks();
  }
}
