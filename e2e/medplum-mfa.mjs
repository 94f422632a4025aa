// @medplum/core embedded login of a user with an authenticator app (Medplum's MFA flow):
// startLogin → {login, mfaRequired: true} (no code yet) → POST auth/mfa/verify {login, token} with
// the current TOTP code → {login, code} → processCode(code) → tokens of that login (whose amr the
// test reads from the database: pwd otp mfa). A wrong code reaches the caller as an OperationOutcomeError.
//
// Env: E2E_ISSUER, E2E_CLIENT_ID, E2E_EMAIL, E2E_PASSWORD, E2E_TOTP_SECRET (base32).
import { createHmac } from 'node:crypto';
import { decodeJwtPayload, env, pkcePair, run } from './lib/common.mjs';
import { medplumCore, recordingFetch } from './lib/medplum.mjs';

const { ClientStorage, MedplumClient, MemoryStorage, normalizeErrorString } = medplumCore;

function base32(text) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const ch of text.replace(/=+$/, '').toUpperCase()) bits += alphabet.indexOf(ch).toString(2).padStart(5, '0');
  const bytes = [];
  for (let i = 0; i + 8 <= bits.length; i += 8) bytes.push(parseInt(bits.slice(i, i + 8), 2));
  return Buffer.from(bytes);
}

// RFC 6238 TOTP (SHA-1, 6 digits, 30 s), as an authenticator app computes it.
function totp(secret, offset = 0) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(Date.now() / 30000) + offset));
  const mac = createHmac('sha1', base32(secret)).update(counter).digest();
  const at = mac[mac.length - 1] & 0xf;
  const value = (mac.readUInt32BE(at) & 0x7fffffff) % 1000000;
  return value.toString().padStart(6, '0');
}

await run(async () => {
  const calls = [];
  const storage = new ClientStorage(new MemoryStorage());
  const medplum = new MedplumClient({ baseUrl: `${env('E2E_ISSUER')}/`, clientId: env('E2E_CLIENT_ID'), storage,
                                      fetch: recordingFetch(calls) });
  const { verifier, challenge } = pkcePair();
  storage.setString('codeVerifier', verifier);
  const login = await medplum.startLogin({
    email: env('E2E_EMAIL'), password: env('E2E_PASSWORD'), scope: 'openid',
    codeChallenge: challenge, codeChallengeMethod: 'S256',
  });
  let wrongCode;
  try {
    await medplum.post('auth/mfa/verify', { login: login.login, token: '000000' });
    wrongCode = { accepted: true };
  } catch (err) {
    wrongCode = { name: err.name, message: normalizeErrorString(err) };
  }
  const verified = await medplum.post('auth/mfa/verify', { login: login.login, token: totp(env('E2E_TOTP_SECRET'), 1) });
  const profile = await medplum.processCode(verified.code);
  return {
    login_response: login,
    wrong_code: wrongCode,
    verified_keys: Object.keys(verified).sort(),
    profile: { resourceType: profile.resourceType, id: profile.id },
    access_token_login_id: decodeJwtPayload(medplum.getAccessToken()).login_id,
    calls: calls.map((c) => ({ method: c.method, path: c.path, status: c.status })),
  };
});
