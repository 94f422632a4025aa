// fhirclient 2.6.3 (SMART client-js) in Node mode: a SMART standalone patient launch.
//
// The app is a real Node HTTP server on a free loopback port (RFC 8252: the registered
// http://127.0.0.1 redirect URI matches on any port). `/launch` calls
// smart(req, res, storage).authorize({iss: <FHIR base>, ...}), which discovers
// <FHIR base>/.well-known/smart-configuration and redirects with PKCE S256 and `aud`; Chromium
// signs the Patient in on our page and allows the consent; `/callback` calls ready(), which
// exchanges the code. The client then reads the patient from the token response, GETs it,
// searches its Observations (by `patient`, through patient.request, with paging and _include),
// tries the other patient's data, refreshes, and reads again with the new token.
//
// Env: E2E_ISSUER, E2E_CLIENT_ID, E2E_EMAIL, E2E_PASSWORD, E2E_SCOPE, E2E_OTHER_PATIENT,
//      E2E_OTHER_OBSERVATION, E2E_ARTIFACTS, E2E_CHROMIUM.
import http from 'node:http';

import { browserAuthorize, decodeJwtPayload, env, launchBrowser, limited, log, run } from './lib/common.mjs';
import { calls, smart } from './lib/fhirclient.mjs';

/** The app's server-side session (one user): what fhirclient keeps between /launch and /callback. */
function memoryStorage() {
  const data = new Map();
  return {
    get: async (key) => data.get(key),
    set: async (key, value) => { data.set(key, value); return value; },
    unset: async (key) => data.delete(key),
  };
}

/** A request's outcome as data: the status of an HttpError, or the resource. */
async function attempt(promise) {
  try {
    return { ok: true, value: await promise };
  } catch (err) {
    return { ok: false, status: err?.status ?? err?.statusCode ?? null, message: String(err?.message ?? err) };
  }
}

function bundleRefs(bundle, mode) {
  return (bundle.entry || []).filter((e) => !mode || e.search?.mode === mode)
    .map((e) => `${e.resource.resourceType}/${e.resource.id}`);
}

await run(async () => {
  const issuer = env('E2E_ISSUER');
  const fhirBase = `${issuer}/fhir/R4`;
  const clientId = env('E2E_CLIENT_ID');
  const scope = env('E2E_SCOPE');
  const otherPatient = env('E2E_OTHER_PATIENT');
  const otherObservation = env('E2E_OTHER_OBSERVATION');
  const storage = memoryStorage();

  let authorizeLocation;
  let resolveReady;
  let rejectReady;
  const ready = new Promise((resolve, reject) => { resolveReady = resolve; rejectReady = reject; });
  const app = http.createServer(async (req, res) => {
    const { pathname } = new URL(req.url, 'http://127.0.0.1');
    try {
      if (pathname === '/launch') {
        const writeHead = res.writeHead.bind(res);
        res.writeHead = (status, headers) => {
          authorizeLocation = headers?.location;
          return writeHead(status, headers);
        };
        await smart(req, res, storage).authorize({ iss: fhirBase, clientId, scope, redirectUri: '/callback',
          pkceMode: 'required' });
      } else if (pathname === '/callback') {
        const client = await smart(req, res, storage).ready();
        res.writeHead(200, { 'content-type': 'text/html' });
        res.end('<!doctype html><title>App</title><p>Signed in.</p>');
        // Every call of the client (and of client.patient, client.user) is a time-limited step.
        resolveReady(limited(client, 'fhirclient', ['patient', 'user', 'encounter']));
      } else {
        res.writeHead(404);
        res.end();
      }
    } catch (err) {
      log('app error', err);
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(String(err?.message ?? err));
      rejectReady(err);
    }
  });
  await new Promise((resolve) => app.listen(0, '127.0.0.1', resolve));
  const appUrl = `http://127.0.0.1:${app.address().port}`;
  log('app listening on', appUrl);

  let signIn;
  let client;
  const browser = await launchBrowser();
  try {
    signIn = await browserAuthorize({ context: await browser.newContext(), authorizeUrl: `${appUrl}/launch`,
      redirectUri: `${appUrl}/callback`, email: env('E2E_EMAIL'), password: env('E2E_PASSWORD'),
      shotPrefix: 'fhirclient' });
    client = await Promise.race([ready, new Promise((_, reject) => setTimeout(
      () => reject(new Error('the app did not complete ready() within 20 s')), 20_000))]);
  } finally {
    await browser.close();
    app.close();
  }
  const authorize = new URL(authorizeLocation);
  const callsAtReady = calls.length;

  // The token response as the client keeps it.
  const tokenResponse = client.state.tokenResponse;
  const patientId = client.patient.id;
  const firstAccess = tokenResponse.access_token;
  const firstRefresh = tokenResponse.refresh_token;

  // Reads and searches through the client.
  const patient = await client.request(`Patient/${patientId}`);
  const patientRead = await client.patient.read();
  const user = await client.user.read();
  const byPatient = await client.request(`Observation?patient=${patientId}`);
  const viaPatientRequest = await client.patient.request('Observation');
  const allPages = await client.request('Observation?_count=2', { pageLimit: 0, flat: true });
  const everything = await client.request('Observation');
  const withInclude = await client.request('Observation?_include=Observation:subject');
  const otherBySubject = await client.request(`Observation?subject=Patient/${otherPatient}`);
  const otherPatientRead = await attempt(client.request(`Patient/${otherPatient}`));
  const otherObservationRead = await attempt(client.request(`Observation/${otherObservation}`));
  const patientSearch = await client.request('Patient');

  // Refresh (offline_access), then read again with the new access token.
  const callsBeforeRefresh = calls.length;
  await client.refresh();
  const refreshCalls = calls.slice(callsBeforeRefresh);
  const afterRefresh = client.state.tokenResponse;
  const patientAfterRefresh = await client.request(`Patient/${patientId}`);
  const lastCall = calls[calls.length - 1];

  return {
    app_url: appUrl,
    authorize: {
      origin_path: `${authorize.origin}${authorize.pathname}`,
      params: Object.fromEntries([...authorize.searchParams].filter(([k]) => k !== 'code_challenge')),
      has_code_challenge: authorize.searchParams.has('code_challenge'),
    },
    state: {
      server_url: client.state.serverUrl,
      authorize_uri: client.state.authorizeUri,
      token_uri: client.state.tokenUri,
      redirect_uri: client.state.redirectUri,
    },
    browser_steps: signIn.steps,
    screenshots: signIn.screenshots,
    calls_at_ready: calls.slice(0, callsAtReady),
    token_response: {
      keys: Object.keys(tokenResponse).sort(),
      patient: tokenResponse.patient ?? null,
      scope: tokenResponse.scope,
      token_type: tokenResponse.token_type,
      need_patient_banner: tokenResponse.need_patient_banner ?? null,
      id_token_claims: tokenResponse.id_token ? decodeJwtPayload(tokenResponse.id_token) : null,
    },
    client_patient_id: patientId,
    fhir_user: client.getFhirUser() ?? null,
    user_type: client.getUserType() ?? null,
    patient: { resourceType: patient.resourceType, id: patient.id },
    patient_read: { resourceType: patientRead.resourceType, id: patientRead.id },
    user: { resourceType: user.resourceType, id: user.id },
    by_patient: { total: byPatient.total, refs: bundleRefs(byPatient) },
    via_patient_request: { total: viaPatientRequest.total, refs: bundleRefs(viaPatientRequest) },
    all_pages: allPages.map((r) => `${r.resourceType}/${r.id}`),
    everything: { total: everything.total, refs: bundleRefs(everything) },
    with_include: { total: withInclude.total, match: bundleRefs(withInclude, 'match'),
      include: bundleRefs(withInclude, 'include') },
    other_by_subject: { total: otherBySubject.total, refs: bundleRefs(otherBySubject) },
    other_patient_read: { ok: otherPatientRead.ok, status: otherPatientRead.status },
    other_observation_read: { ok: otherObservationRead.ok, status: otherObservationRead.status },
    patient_search: { total: patientSearch.total, refs: bundleRefs(patientSearch) },
    refresh: {
      calls: refreshCalls,
      access_token_changed: afterRefresh.access_token !== firstAccess,
      refresh_token_changed: afterRefresh.refresh_token !== firstRefresh,
      patient_after: afterRefresh.patient ?? null,
      read_after: { resourceType: patientAfterRefresh.resourceType, id: patientAfterRefresh.id },
      read_after_used_new_token: lastCall.status === 200
        && lastCall.bearer_tail === afterRefresh.access_token.slice(-12),
    },
    calls,
  };
});
