// Project Admin: copy buttons and the project switcher. Loaded as a file (no inline script), so
// the pages' Content-Security-Policy can forbid inline scripts.
(function () {
  "use strict";

  function announce(button, text) {
    var status = document.querySelector(".copy-status");
    if (status) { status.textContent = text; }
    var label = button.getAttribute("data-label") || button.textContent;
    button.setAttribute("data-label", label);
    button.textContent = text === "Copied" ? "Copied" : label;
    window.setTimeout(function () { button.textContent = label; }, 2000);
  }

  function fallbackCopy(target, value) {
    if (target.select) {
      target.focus();
      target.select();
    } else {
      var range = document.createRange();
      range.selectNodeContents(target);
      var selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
    }
    try { return document.execCommand("copy"); } catch (e) { return false; }
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) { return; }
    var target = document.getElementById(button.getAttribute("data-copy"));
    if (!target) { return; }
    var value = "value" in target ? target.value : target.textContent.trim();
    var done = function () { announce(button, "Copied"); };
    var failed = function () {
      if (fallbackCopy(target, value)) { done(); } else { announce(button, "Select and copy (Ctrl+C / ⌘C)"); }
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(value).then(done, failed);
    } else {
      failed();
    }
  });

  document.addEventListener("change", function (event) {
    var select = event.target.closest("select[data-autosubmit]");
    if (select && select.form) { select.form.submit(); }
  });
}());
