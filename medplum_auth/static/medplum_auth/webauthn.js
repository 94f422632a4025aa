// WebAuthn for the second-factor and account pages: fetch the server's options (JSON with
// base64url binary fields), call navigator.credentials.get()/create(), post the answer back as
// JSON in the form's hidden "credential" field. No inline script: the pages' CSP may forbid it.
(function () {
  "use strict";
  function fromB64url(value) {
    var b64 = value.replace(/-/g, "+").replace(/_/g, "/");
    while (b64.length % 4) { b64 += "="; }
    var raw = atob(b64), bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) { bytes[i] = raw.charCodeAt(i); }
    return bytes.buffer;
  }
  function toB64url(buffer) {
    var bytes = new Uint8Array(buffer), raw = "";
    for (var i = 0; i < bytes.length; i++) { raw += String.fromCharCode(bytes[i]); }
    return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function descriptors(list) {
    return (list || []).map(function (d) { return Object.assign({}, d, { id: fromB64url(d.id) }); });
  }
  function answer(credential) {
    var r = credential.response, out = { id: credential.id, rawId: toB64url(credential.rawId), type: credential.type,
      response: { clientDataJSON: toB64url(r.clientDataJSON) }, clientExtensionResults: credential.getClientExtensionResults() };
    if (r.attestationObject) {
      out.response.attestationObject = toB64url(r.attestationObject);
      if (r.getTransports) { out.response.transports = r.getTransports(); }
    } else {
      out.response.authenticatorData = toB64url(r.authenticatorData);
      out.response.signature = toB64url(r.signature);
      if (r.userHandle) { out.response.userHandle = toB64url(r.userHandle); }
    }
    if (credential.authenticatorAttachment) { out.authenticatorAttachment = credential.authenticatorAttachment; }
    return out;
  }
  function fail(message) {
    var box = document.getElementById("webauthn-error");
    if (box) { box.textContent = message; box.hidden = false; }
  }
  document.querySelectorAll("[data-webauthn]").forEach(function (button) {
    button.addEventListener("click", function () {
      var form = button.closest("form"), mode = button.getAttribute("data-webauthn");
      if (!window.PublicKeyCredential) { fail("This browser does not support security keys."); return; }
      button.disabled = true;
      fetch(form.getAttribute("data-options"), { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) {
          if (!response.ok) { throw new Error("The server did not start the security key step."); }
          return response.json();
        })
        .then(function (options) {
          options.challenge = fromB64url(options.challenge);
          if (mode === "create") {
            options.user.id = fromB64url(options.user.id);
            options.excludeCredentials = descriptors(options.excludeCredentials);
            return navigator.credentials.create({ publicKey: options });
          }
          options.allowCredentials = descriptors(options.allowCredentials);
          return navigator.credentials.get({ publicKey: options });
        })
        .then(function (credential) {
          form.querySelector('input[name="credential"]').value = JSON.stringify(answer(credential));
          form.submit();
        })
        .catch(function (error) {
          button.disabled = false;
          fail(error && error.message ? error.message : "The security key step did not finish.");
        });
    });
  });
})();
