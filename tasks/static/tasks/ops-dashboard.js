// Live dashboard: fetch the server-rendered fragment every data-refresh seconds and swap it in.
(function () {
  "use strict";
  var box = document.getElementById("ops-live");
  if (!box) { return; }
  var url = box.getAttribute("data-url");
  var seconds = Math.max(1, parseInt(box.getAttribute("data-refresh"), 10) || 10);
  var stamp = document.getElementById("ops-updated");
  function refresh() {
    fetch(url, {credentials: "same-origin", headers: {"X-Requested-With": "fetch"}})
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.text();
      })
      .then(function (html) {
        box.innerHTML = html;
        if (stamp) { stamp.textContent = new Date().toLocaleTimeString(); }
      })
      .catch(function (error) {
        if (stamp) { stamp.textContent = "update failed (" + error.message + "), retrying"; }
      })
      .finally(function () { window.setTimeout(refresh, seconds * 1000); });
  }
  window.setTimeout(refresh, seconds * 1000);
}());
