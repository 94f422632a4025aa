// @medplum/core batch and transaction Bundles, autoBatch, upsertResource, validateResource and
// readPatientEverything, as a practitioner and as a patient (embedded login: startLogin →
// processCode, as medplum-embedded.mjs).
//
// Env: E2E_ISSUER, E2E_CLIENT_ID, E2E_EMAIL, E2E_PASSWORD (the patient), E2E_PRACTITIONER_EMAIL,
// E2E_PRACTITIONER_PASSWORD, E2E_PATIENT_ID (the patient's profile id).
import { env, limited, pkcePair, run, step } from './lib/common.mjs';
import { medplumCore, recordingFetch } from './lib/medplum.mjs';

const { ClientStorage, MedplumClient, MemoryStorage, normalizeErrorString } = medplumCore;

async function signIn(email, password, scope, calls, options = {}) {
  const storage = new ClientStorage(new MemoryStorage());
  const client = new MedplumClient({ baseUrl: `${env('E2E_ISSUER')}/`, clientId: env('E2E_CLIENT_ID'), storage,
                                     fetch: recordingFetch(calls), ...options });
  const { verifier, challenge } = pkcePair();
  storage.setString('codeVerifier', verifier);
  const login = await step(`startLogin ${email}`, () => client.startLogin({
    email, password, scope, codeChallenge: challenge, codeChallengeMethod: 'S256' }));
  await step('processCode', () => client.processCode(login.code));
  return limited(client, email);
}

async function failure(action) {
  try {
    await action();
    return { ok: true };
  } catch (err) {
    return { name: err.name, message: normalizeErrorString(err), status: err.outcome?.id ?? null };
  }
}

const summary = (bundle) => ({
  type: bundle.type,
  entries: (bundle.entry ?? []).map((e) => ({ status: e.response?.status, location: e.response?.location ?? null,
    etag: e.response?.etag ?? null, resourceType: e.resource?.resourceType ?? null, id: e.resource?.id ?? null,
    subject: e.resource?.subject?.reference ?? null, outcome: e.response?.outcome?.issue?.[0]?.code ?? null })),
});
const refs = (bundle) => (bundle.entry ?? []).map((e) => `${e.resource.resourceType}/${e.resource.id}`).sort();

await run(async () => {
  const patientId = env('E2E_PATIENT_ID');
  const calls = [];
  const doctor = await signIn(env('E2E_PRACTITIONER_EMAIL'), env('E2E_PRACTITIONER_PASSWORD'), 'openid', calls);

  // A transaction: the Observation refers to the Patient by its urn:uuid, listed before it.
  const transaction = await doctor.executeBatch({ resourceType: 'Bundle', type: 'transaction', entry: [
    { fullUrl: 'urn:uuid:obs-1', request: { method: 'POST', url: 'Observation' },
      resource: { resourceType: 'Observation', status: 'final', code: { text: 'heart rate' },
                  subject: { reference: 'urn:uuid:pat-1' } } },
    { fullUrl: 'urn:uuid:pat-1', request: { method: 'POST', url: 'Patient' },
      resource: { resourceType: 'Patient', name: [{ family: 'Transaction' }] } },
  ] });
  // A batch: a create with a urn:uuid reference, a read of the signed-in patient, a search, and a
  // read that fails in its own slot.
  const batch = await doctor.executeBatch({ resourceType: 'Bundle', type: 'batch', entry: [
    { fullUrl: 'urn:uuid:pat-2', request: { method: 'POST', url: 'Patient' },
      resource: { resourceType: 'Patient', name: [{ family: 'Batch' }] } },
    { request: { method: 'POST', url: 'Observation' },
      resource: { resourceType: 'Observation', status: 'final', code: { text: 'weight' },
                  subject: { reference: 'urn:uuid:pat-2' } } },
    { request: { method: 'GET', url: `Patient/${patientId}` } },
    { request: { method: 'GET', url: 'Patient?family=Transaction' } },
    { request: { method: 'GET', url: 'Patient/does-not-exist' } },
  ] });

  // upsertResource twice with the same identifier: one resource, two versions.
  const obs = { resourceType: 'Observation', status: 'final', code: { text: 'glucose' },
                identifier: [{ system: 'urn:e2e', value: 'upsert-1' }], subject: { reference: `Patient/${patientId}` } };
  const firstUpsert = await doctor.upsertResource(obs, 'identifier=urn:e2e|upsert-1');
  const secondUpsert = await doctor.upsertResource({ ...obs, status: 'amended' }, 'identifier=urn:e2e|upsert-1');

  const valid = await doctor.validateResource({ resourceType: 'Patient', name: [{ family: 'Valid' }] });
  const invalid = await failure(() => doctor.validateResource({ resourceType: 'Patient', birthDate: 'not-a-date' }));

  // An autoBatch client (Medplum's example apps use 100 ms): parallel reads and a search in one POST.
  const autoCalls = [];
  const auto = new MedplumClient({ baseUrl: `${env('E2E_ISSUER')}/`, autoBatchTime: 100,
                                   storage: new ClientStorage(new MemoryStorage()), fetch: recordingFetch(autoCalls) });
  auto.setAccessToken(doctor.getAccessToken());
  const [autoPatient, autoObs, autoSearch, autoMissing] = await step('autoBatch', () => Promise.all([
    auto.readResource('Patient', patientId),
    auto.readResource('Observation', firstUpsert.id),
    auto.searchResources('Observation', `subject=Patient/${patientId}`),
    failure(() => auto.readResource('Patient', 'does-not-exist')),
  ]));

  const everything = await doctor.readPatientEverything(patientId);

  // The patient: its own compartment only.
  const patientCalls = [];
  const patient = await signIn(env('E2E_EMAIL'), env('E2E_PASSWORD'), 'openid patient/*.rs', patientCalls);
  const own = await patient.readPatientEverything(patientId);
  const otherId = transaction.entry[1].resource.id;
  const other = await failure(() => patient.readPatientEverything(otherId));
  const patientBatch = await patient.executeBatch({ resourceType: 'Bundle', type: 'batch', entry: [
    { request: { method: 'GET', url: `Patient/${otherId}` } },
    { request: { method: 'GET', url: 'Observation' } },
  ] });

  return {
    transaction: summary(transaction),
    batch: summary(batch),
    upsert: { first: { id: firstUpsert.id, version: firstUpsert.meta.versionId },
              second: { id: secondUpsert.id, version: secondUpsert.meta.versionId, status: secondUpsert.status } },
    validate: { valid, invalid },
    auto: { patient: autoPatient.id, observation: autoObs.id, search: autoSearch.map((o) => o.id),
            missing: autoMissing, calls: autoCalls.map((c) => `${c.method} ${c.path} ${c.status}`) },
    everything: { total: everything.total, refs: refs(everything) },
    patient: { own: { total: own.total, refs: refs(own) }, other, other_id: otherId,
               batch: summary(patientBatch),
               batch_search_subjects: (patientBatch.entry[1].resource?.entry ?? []).map((e) => e.resource.subject.reference) },
    calls,
  };
});
