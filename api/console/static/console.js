/* Herald console: progressive enhancement only. Every form works without this file; with it:
 * - forms with data-confirm ask first;
 * - a checkbox with data-select-all="NAME" toggles every checkbox named NAME;
 * - forms with data-async submit by fetch (the CSRF token in the X-CSRF-Token header), show the answer in the
 *   element named by data-result, and, when the answer carries poll_url, poll it until it says done;
 * - elements with data-poll-url refresh their text from that URL until it says done.
 * Herald.fetchJSON is the one way a page's script talks to the console (ops' pages use it too).
 */
(function () {
  "use strict";
  var POLL_INTERVAL_MS = 300;
  var POLL_LIMIT = 200;

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function fetchJSON(url, options) {
    options = options || {};
    var headers = { "Accept": "application/json", "X-CSRF-Token": csrfToken() };
    var init = { method: options.method || "GET", headers: headers, credentials: "same-origin" };
    if (options.form) {
      init.body = new URLSearchParams(new FormData(options.form));
      headers["Content-Type"] = "application/x-www-form-urlencoded";
    }
    return fetch(url, init).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (body) {
        body._status = response.status;
        return body;
      });
    });
  }

  function show(target, body) {
    if (!target) { return; }
    target.textContent = body.message || body.error || ("HTTP " + body._status);
    target.className = target.className.replace(/\bresult-(ok|error|info)\b/g, "").trim() +
      " result-" + (body.level || (body._status < 400 ? "info" : "error"));
    if (body.level) { target.setAttribute("data-level", body.level); }
  }

  function poll(url, target, count) {
    if (count > POLL_LIMIT) { return; }
    fetchJSON(url).then(function (body) {
      show(target, body);
      if (!body.done) {
        window.setTimeout(function () { poll(url, target, count + 1); }, POLL_INTERVAL_MS);
      }
    }).catch(function () {
      window.setTimeout(function () { poll(url, target, count + 1); }, POLL_INTERVAL_MS * 3);
    });
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement)) { return; }
    var submitter = event.submitter;
    var question = (submitter && submitter.getAttribute("data-confirm")) || form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
      return;
    }
    if (!form.hasAttribute("data-async")) { return; }
    event.preventDefault();
    var target = document.getElementById(form.getAttribute("data-result"));
    if (target) { target.textContent = "Sending…"; }
    fetchJSON(form.action, { method: "POST", form: form }).then(function (body) {
      show(target, body);
      if (body.poll_url) { poll(body.poll_url, target, 0); }
    }).catch(function () {
      if (target) { target.textContent = "The console could not be reached."; }
    });
  });

  document.addEventListener("change", function (event) {
    var box = event.target;
    if (!(box instanceof HTMLInputElement) || !box.hasAttribute("data-select-all")) { return; }
    var name = box.getAttribute("data-select-all");
    document.querySelectorAll('input[type=checkbox][name="' + name + '"]').forEach(function (other) {
      other.checked = box.checked;
    });
  });

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-poll-url]").forEach(function (el) {
      poll(el.getAttribute("data-poll-url"), el, 0);
    });
    document.querySelectorAll("[data-js-only]").forEach(function (el) { el.hidden = false; });
  });

  window.Herald = { fetchJSON: fetchJSON, poll: poll, csrfToken: csrfToken };
})();
