// @medplum/core against every-R4-type support (issue 18): a backend (startClientLogin) creates,
// reads, searches and deletes resources of types served from the R4 data, and uploads a Binary
// with createBinary, then fetches it back with download() from the Binary's url as an app would
// from an Attachment.url.
//
// Env: E2E_ISSUER, E2E_CLIENT_ID, E2E_CLIENT_SECRET, E2E_PATIENT_ID.
import { env, run, step } from './lib/common.mjs';
import { medplumCore, recordingFetch } from './lib/medplum.mjs';

const { ClientStorage, MedplumClient, MemoryStorage } = medplumCore;

await run(async () => {
  const issuer = env('E2E_ISSUER');
  const patient = { reference: `Patient/${env('E2E_PATIENT_ID')}` };
  const calls = [];
  const medplum = new MedplumClient({
    baseUrl: `${issuer}/`, storage: new ClientStorage(new MemoryStorage()), fetch: recordingFetch(calls),
  });
  await step('startClientLogin', () => medplum.startClientLogin(env('E2E_CLIENT_ID'), env('E2E_CLIENT_SECRET')));

  // [resource without resourceType, search parameter, its value]
  const cases = {
    Communication: [{ status: 'completed', subject: patient, payload: [{ contentString: 'hello' }] }, 'subject', patient.reference],
    Task: [{ status: 'requested', intent: 'order', for: patient, description: 'call back' }, 'patient', patient.reference],
    Questionnaire: [{ status: 'active', name: 'intake', url: 'http://example.org/q/intake-e2e' }, 'url', 'http://example.org/q/intake-e2e'],
    QuestionnaireResponse: [{ status: 'completed', subject: patient }, 'subject', patient.reference],
    ServiceRequest: [{ status: 'active', intent: 'order', subject: patient, code: { text: 'x-ray' } }, 'subject', patient.reference],
    Appointment: [{ status: 'booked', participant: [{ actor: patient, status: 'accepted' }] }, 'actor', patient.reference],
    PractitionerRole: [{ active: true, code: [{ coding: [{ system: 'urn:e2e', code: 'gp' }] }] }, 'role', 'urn:e2e|gp'],
    Location: [{ status: 'active', name: 'E2E Ward Seven' }, 'name', 'e2e ward'],
    CareTeam: [{ status: 'active', subject: patient, name: 'E2E team' }, 'patient', patient.reference],
    Goal: [{ lifecycleStatus: 'active', description: { text: 'walk daily' }, subject: patient }, 'patient', patient.reference],
    RiskAssessment: [{ status: 'final', subject: patient, prediction: [{ probabilityDecimal: 0.25 }] }, 'probability', 'gt0.2'],
  };
  const types = {};
  for (const [resourceType, [fields, param, value]] of Object.entries(cases)) {
    const created = await step(`create ${resourceType}`, () => medplum.createResource({ resourceType, ...fields }));
    const read = await step(`read ${resourceType}`, () => medplum.readResource(resourceType, created.id, { cache: 'no-cache' }));
    const found = await step(`search ${resourceType}`, () => medplum.searchResources(resourceType, { [param]: value }, { cache: 'no-cache' }));
    await step(`delete ${resourceType}`, () => medplum.deleteResource(resourceType, created.id));
    let afterDelete;
    try {
      await medplum.readResource(resourceType, created.id, { cache: 'no-cache' });
      afterDelete = 'still there';
    } catch (err) {
      afterDelete = err.outcome?.issue?.[0]?.code ?? String(err);
    }
    types[resourceType] = {
      id: created.id, version: created.meta?.versionId, read_id: read.id, found: found.map((r) => r.id), after_delete: afterDelete,
    };
  }

  const bytes = new Uint8Array(Array.from({ length: 2048 }, (_, i) => (i * 7) % 256));
  const binary = await step('createBinary', () => medplum.createBinary({
    data: bytes, contentType: 'application/pdf', filename: 'report.pdf', securityContext: patient,
  }));
  const blob = await step('download', () => medplum.download(binary.url));
  const downloaded = new Uint8Array(await blob.arrayBuffer());
  const attachment = await step('createAttachment', () => medplum.createAttachment({
    data: 'plain text', contentType: 'text/plain', filename: 'note.txt',
  }));
  const text = await step('download attachment', async () => (await medplum.download(attachment.url)).text());
  return {
    types,
    binary: {
      resourceType: binary.resourceType, id: binary.id, contentType: binary.contentType, url: binary.url,
      securityContext: binary.securityContext, blob_type: blob.type, size: downloaded.length,
      same_bytes: downloaded.length === bytes.length && downloaded.every((b, i) => b === bytes[i]),
    },
    attachment: { ...attachment, text },
    binary_calls: calls.filter((c) => c.path.startsWith('/fhir/R4/Binary')),
  };
});
