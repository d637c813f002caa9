/* Herald console: the copy button beside a secret shown once (progressive enhancement: without JS the secret
 * is plain selectable text). <button data-copy="ID" data-js-only hidden> copies the text of element ID and
 * says so in the element named by its aria-describedby. */
(function () {
  "use strict";
  function fallbackCopy(text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "absolute";
    area.style.left = "-9999px";
    document.body.appendChild(area);
    area.select();
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    document.body.removeChild(area);
    return ok ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  }
  document.addEventListener("click", function (event) {
    var button = event.target instanceof Element ? event.target.closest("[data-copy]") : null;
    if (!button) { return; }
    var source = document.getElementById(button.getAttribute("data-copy"));
    var status = document.getElementById(button.getAttribute("aria-describedby") || "");
    if (!source) { return; }
    var text = source.textContent.trim();
    // The async clipboard can refuse where the old one still works (a page that lost focus while the click was
    // handled, a permission policy): try the old one before telling the user to copy by hand.
    var copy = navigator.clipboard && window.isSecureContext
      ? navigator.clipboard.writeText(text).catch(function () { return fallbackCopy(text); })
      : fallbackCopy(text);
    copy.then(function () {
      if (status) { status.textContent = "Copied to the clipboard."; }
    }, function () {
      if (status) { status.textContent = "Could not copy: select the text and copy it by hand."; }
    });
  });
})();
