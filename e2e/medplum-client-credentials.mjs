// @medplum/core client credentials (a backend): startClientLogin(clientId, clientSecret) →
// POST /oauth2/token grant_type=client_credentials, then two FHIR reads with that token. The SDK
// treats a token as expired once less than refreshGracePeriod (default 300 s) is left before its
// exp, and re-runs the grant before every call; with tokens that live ≤ 300 s it never stops
// (startClientLogin itself never returns). Every call has a step time limit, so such a loop fails
// fast; pytest also counts the token requests the server saw.
//
// Env: E2E_ISSUER, E2E_CLIENT_ID, E2E_CLIENT_SECRET, E2E_PATIENT_ID.
import { decodeJwtPayload, env, run, step } from './lib/common.mjs';
import { medplumCore, recordingFetch } from './lib/medplum.mjs';

const { ClientStorage, MedplumClient, MemoryStorage } = medplumCore;

await run(async () => {
  const issuer = env('E2E_ISSUER');
  const clientId = env('E2E_CLIENT_ID');
  const patientId = env('E2E_PATIENT_ID');
  const calls = [];
  // The SDK's defaults, refreshGracePeriod included: this is what a backend gets out of the box.
  const medplum = new MedplumClient({
    baseUrl: `${issuer}/`, storage: new ClientStorage(new MemoryStorage()), fetch: recordingFetch(calls),
  });

  await step('startClientLogin', () => medplum.startClientLogin(clientId, env('E2E_CLIENT_SECRET')));
  const accessToken = medplum.getAccessToken();
  const profile = medplum.getProfile();  // from /auth/me: the ClientApplication (Medplum's profile of a client login)
  const afterLogin = calls.length;
  const first = await step('first read', () => medplum.readResource('Patient', patientId, { cache: 'no-cache' }));
  const second = await step('second read', () => medplum.readResource('Patient', patientId, { cache: 'no-cache' }));

  return {
    access_token_claims: decodeJwtPayload(accessToken),
    same_token_after_reads: medplum.getAccessToken() === accessToken,
    reads: [first.id, second.id],
    profile: profile ? { resourceType: profile.resourceType, id: profile.id, name: profile.name } : null,
    login_calls: calls.slice(0, afterLogin),
    calls,
  };
});
