// Progressive enhancement only: every page works without this file.
// A filter <select> applies itself when changed (without JavaScript: the Apply button).
// A section marked data-live (the overview's last fan-out run, while it runs) is fetched
// again from its data-fragment URL every POLL_MS and replaced, until it is no longer live.
var POLL_MS = 2000;

function enhance(root) {
  root.querySelectorAll("[data-js-hidden]").forEach(function (element) { element.hidden = true; });
  root.querySelectorAll("[data-js-shown]").forEach(function (element) { element.hidden = false; });
}

function poll(section) {
  window.setTimeout(function () {
    // The header tells the console this is no operator activity: polling never keeps an idle session alive.
    fetch(section.dataset.fragment, { credentials: "same-origin", headers: { "X-Console-Poll": "1" } })
      .then(function (response) {
        // Redirected: the session ended (the sign-in page came back). Stop; a reload shows the sign-in.
        if (response.redirected || (response.status >= 400 && response.status < 500)) { return null; }
        if (!response.ok) { throw new Error("status " + response.status); }
        return response.text();
      })
      .then(function (html) {
        if (html === null) { return; }
        var template = document.createElement("template");
        template.innerHTML = html;
        var fresh = template.content.querySelector("#" + section.id);
        if (!fresh) { return; }
        enhance(fresh);
        section.replaceWith(fresh);
        if (fresh.hasAttribute("data-live")) { poll(fresh); }
      })
      .catch(function () { poll(section); });  // the database or network hiccuped: try again
  }, POLL_MS);
}

document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });
  enhance(document);
  document.querySelectorAll("[data-live][data-fragment]").forEach(poll);
  // A copy button next to a read-only field (a new key): without JavaScript the field
  // is still there to select by hand, and the button stays hidden.
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    var field = document.getElementById(button.getAttribute("data-copy"));
    var status = document.getElementById("copy-status");
    button.hidden = false;
    button.addEventListener("click", function () {
      var done = function () { if (status) { status.textContent = "Copied."; } };
      field.select();
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(field.value).then(done, function () {
          document.execCommand("copy");
          done();
        });
      } else {
        document.execCommand("copy");
        done();
      }
    });
  });
});
