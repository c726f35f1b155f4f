// Runs the WebAuthn ceremony of a passkey page (api/web_passkeys.py): reads the options the
// server put in the form's data-options, asks the browser for a passkey, puts the answer in the
// form as JSON (bytes as base64url, the form of PublicKeyCredential.toJSON) and submits it. A
// file of its own, not an inline script, so that the page's Content-Security-Policy holds.
(function () {
  "use strict";
  var form = document.getElementById("passkey-form");
  if (!form) {
    return;
  }
  var button = document.getElementById("passkey-start");

  function show(id, visible) {
    document.getElementById(id).hidden = !visible;
  }

  if (!window.PublicKeyCredential || !navigator.credentials) {
    show("passkey-unsupported", true);
    button.disabled = true;
    return;
  }

  function toBytes(text) {
    var base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    var binary = atob(base64 + "===".slice((base64.length + 3) % 4));
    var bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i++) {
      bytes[i] = binary.charCodeAt(i);
    }
    return bytes;
  }

  function toText(buffer) {
    var bytes = new Uint8Array(buffer);
    var binary = "";
    for (var i = 0; i < bytes.length; i++) {
      binary += String.fromCharCode(bytes[i]);
    }
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function descriptors(list) {
    return (list || []).map(function (d) {
      return { type: d.type, id: toBytes(d.id), transports: d.transports };
    });
  }

  function creationOptions(o) {
    o.challenge = toBytes(o.challenge);
    o.user.id = toBytes(o.user.id);
    o.excludeCredentials = descriptors(o.excludeCredentials);
    return o;
  }

  function requestOptions(o) {
    o.challenge = toBytes(o.challenge);
    o.allowCredentials = descriptors(o.allowCredentials);
    return o;
  }

  function serialise(credential) {
    var r = credential.response;
    var out = {
      id: credential.id,
      rawId: toText(credential.rawId),
      type: credential.type,
      authenticatorAttachment: credential.authenticatorAttachment || null,
      clientExtensionResults: credential.getClientExtensionResults(),
      response: { clientDataJSON: toText(r.clientDataJSON) },
    };
    if (r.attestationObject) {
      out.response.attestationObject = toText(r.attestationObject);
      out.response.transports = r.getTransports ? r.getTransports() : [];
    } else {
      out.response.authenticatorData = toText(r.authenticatorData);
      out.response.signature = toText(r.signature);
      out.response.userHandle = r.userHandle ? toText(r.userHandle) : null;
    }
    return out;
  }

  button.addEventListener("click", function () {
    button.disabled = true;
    show("passkey-error", false);
    var options = JSON.parse(form.getAttribute("data-options"));
    var asked =
      form.getAttribute("data-ceremony") === "create"
        ? navigator.credentials.create({ publicKey: creationOptions(options) })
        : navigator.credentials.get({ publicKey: requestOptions(options) });
    asked
      .then(function (credential) {
        document.getElementById("credential").value = JSON.stringify(serialise(credential));
        form.submit();
      })
      .catch(function () {
        // Cancelled, timed out or refused by the authenticator: the challenge is still unspent.
        show("passkey-error", true);
        button.disabled = false;
      });
  });
})();
