// Paste into the shop theme after the tracker snippet: asks for permission on a user gesture
// (call window.shopPush.subscribe() from a button) and registers the browser with the shop.
(function () {
  var VAPID = "{{ vapid_public_key|escapejs }}", SITE = "{{ site_url|escapejs }}", COOKIE = "{{ cookie|escapejs }}";
  function key(b64) {
    var pad = "=".repeat((4 - b64.length % 4) % 4), raw = atob((b64 + pad).replace(/-/g, "+").replace(/_/g, "/"));
    return Uint8Array.from(Array.prototype.map.call(raw, function (c) { return c.charCodeAt(0); }));
  }
  function anonymousId() {
    var parts = document.cookie.split("; ");
    for (var i = 0; i < parts.length; i++) {
      if (parts[i].indexOf(COOKIE + "=") === 0) { return decodeURIComponent(parts[i].slice(COOKIE.length + 1)); }
    }
    return "";
  }
  window.shopPush = {
    subscribe: function () {
      if (!("serviceWorker" in navigator) || !("PushManager" in window)) { return Promise.resolve(false); }
      return navigator.serviceWorker.register(SITE + "/push/sw.js").then(function (reg) {
        return reg.pushManager.subscribe({userVisibleOnly: true, applicationServerKey: key(VAPID)});
      }).then(function (sub) {
        return fetch(SITE + "/push/subscriptions", {method: "POST", headers: {"Content-Type": "application/json"},
          body: JSON.stringify({subscription: sub.toJSON(), anonymous_id: anonymousId()})});
      }).then(function (r) { return r.ok; });
    }
  };
})();
