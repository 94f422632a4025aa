def test_factories(client_app, patient_membership):
    assert client_app.verify_secret(client_app.plaintext_secret)
    assert patient_membership.profile.startswith("Patient/")
