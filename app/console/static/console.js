// Progressive enhancement only: every page works without this file.
// A filter <select> applies itself when changed (without JavaScript: the Apply button).
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });
  document.querySelectorAll("[data-js-hidden]").forEach(function (element) {
    element.hidden = true;
  });
});
