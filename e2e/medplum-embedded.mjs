// @medplum/core embedded login (no browser): startLogin({email, password, scope, codeChallenge,
// codeChallengeMethod:'S256'}) → POST /auth/login → {login, code}; then processCode(code) with the
// verifier in storage → token → /auth/me → the Patient profile. Also: a wrong password surfaces as
// the client's OperationOutcomeError, patchResource (JSON Patch) on the profile, a failing JSON
// Patch `test` as an OperationOutcomeError, createResourceIfNoneExist (If-None-Exist) twice, and a
// client-side API call after signOut() is refused.
//
// Env: E2E_ISSUER, E2E_CLIENT_ID, E2E_EMAIL, E2E_PASSWORD.
import { decodeJwtPayload, env, limited, pkcePair, rawFetch, run } from './lib/common.mjs';
import { medplumCore, recordingFetch } from './lib/medplum.mjs';

const { ClientStorage, MedplumClient, MemoryStorage, normalizeErrorString } = medplumCore;

await run(async () => {
  const issuer = env('E2E_ISSUER');
  const clientId = env('E2E_CLIENT_ID');
  const calls = [];
  const storage = new ClientStorage(new MemoryStorage());
  // Every client call is a time-limited step (lib/common.mjs `limited`).
  const medplum = limited(new MedplumClient({ baseUrl: `${issuer}/`, clientId, storage, fetch: recordingFetch(calls) }),
    'medplum');

  let wrongPassword;
  try {
    const { challenge } = pkcePair();
    await medplum.startLogin({ email: env('E2E_EMAIL'), password: 'not-the-password', scope: 'openid',
                               codeChallenge: challenge, codeChallengeMethod: 'S256' });
    wrongPassword = { accepted: true };
  } catch (err) {
    wrongPassword = { name: err.name, message: normalizeErrorString(err), outcome: err.outcome ?? null };
  }

  const { verifier, challenge } = pkcePair();
  storage.setString('codeVerifier', verifier);
  const login = await medplum.startLogin({
    email: env('E2E_EMAIL'), password: env('E2E_PASSWORD'), scope: 'openid offline_access',
    codeChallenge: challenge, codeChallengeMethod: 'S256',
  });
  if (!login.code) throw new Error(`startLogin returned no code: ${JSON.stringify(login)}`);
  const profile = await medplum.processCode(login.code);
  const accessToken = medplum.getAccessToken();
  const active = medplum.getActiveLogin();
  const me = await medplum.get('auth/me', { cache: 'no-cache' });

  const patched = await medplum.patchResource('Patient', profile.id, [
    { op: 'test', path: '/id', value: profile.id },
    { op: 'add', path: '/gender', value: 'unknown' },
  ]);
  let failedPatch;
  try {
    await medplum.patchResource('Patient', profile.id, [{ op: 'test', path: '/gender', value: 'female' }]);
    failedPatch = { accepted: true };
  } catch (err) {
    failedPatch = { name: err.name, message: normalizeErrorString(err), outcome: err.outcome ?? null };
  }
  const reread = await medplum.readResource('Patient', profile.id, { cache: 'no-cache' });

  const observation = {
    resourceType: 'Observation', status: 'final', identifier: [{ system: 'urn:e2e', value: 'obs-1' }],
    code: { text: 'e2e' }, subject: { reference: `Patient/${profile.id}` },
  };
  const created = await medplum.createResourceIfNoneExist(observation, 'identifier=urn:e2e|obs-1');
  const existing = await medplum.createResourceIfNoneExist(observation, 'identifier=urn:e2e|obs-1');

  await medplum.signOut();
  let afterSignOut;
  try {
    await medplum.get('auth/me', { cache: 'no-cache' });
    afterSignOut = { accepted: true };
  } catch (err) {
    afterSignOut = { name: err.name, message: normalizeErrorString(err) };
  }
  const oldToken = await rawFetch(`${issuer}/auth/me`, { headers: { Authorization: `Bearer ${accessToken}` } });

  return {
    wrong_password: wrongPassword,
    login_response_keys: Object.keys(login).sort(),
    profile,
    login: { project: active.project, profile: active.profile, has_refresh_token: Boolean(active.refreshToken) },
    access_token_claims: decodeJwtPayload(accessToken),
    me: { user: me.user, project: me.project, profile: me.profile, membership: me.membership },
    patched: { version: patched.meta?.versionId, gender: patched.gender },
    failed_patch: failedPatch,
    reread: { version: reread.meta?.versionId, gender: reread.gender },
    conditional_create: { first_id: created.id, second_id: existing.id },
    after_sign_out: afterSignOut,
    old_token_after_sign_out: oldToken,
    calls,
  };
});
