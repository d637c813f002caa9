/* Herald console, Dead letters page: when the background job the page polls (console.js data-poll-url) has
 * finished, offer the list as it is now (the counts and rows on the page are from before the job). */
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", function () {
    var progress = document.getElementById("job-progress");
    var refresh = document.getElementById("job-refresh");
    if (!progress || !refresh) { return; }
    function check() {
      var level = progress.getAttribute("data-level");
      if (level === "ok" || level === "error") { refresh.hidden = false; }
    }
    new MutationObserver(check).observe(progress, { attributes: true, attributeFilter: ["data-level"] });
    check();
  });
})();
