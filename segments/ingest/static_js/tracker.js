/* Shop tracker: product_viewed, category_viewed, searched and cart events with a public write key.
 * Paste into the theme:
 *   <script>window.smt=window.smt||function(){(smt.q=smt.q||[]).push(arguments)};</script>
 *   <script async src="https://YOUR-APP/t/tracker.js"></script>
 * then smt('track', 'product_viewed', {product_id: '123', sku: 'MUG-1', title: 'Mug', price: '12.00'});
 *      smt('identify', {email: 'ana@example.com'});
 * A form with the attribute data-sm-identify identifies the visitor by its email field on submit.
 * A link in our emails carries ?sm_t=<signed token>; the landing page identifies the visitor with it.
 */
(function (w, d) {
  "use strict";
  var CONFIG = __CONFIG__;
  var YEAR2 = 63072000;

  function readCookie(name) {
    var parts = ("; " + d.cookie).split("; " + name + "=");
    return parts.length === 2 ? decodeURIComponent(parts.pop().split(";").shift()) : "";
  }

  function newId() {
    if (w.crypto && w.crypto.randomUUID) { return w.crypto.randomUUID(); }
    var s = ""; for (var i = 0; i < 32; i++) { s += Math.floor(Math.random() * 16).toString(16); }
    return s;
  }

  // First-party cookie on the shop's own domain: the anonymous id survives page loads.
  function anonymousId() {
    var id = readCookie(CONFIG.cookie);
    if (!id) { id = newId(); }
    d.cookie = CONFIG.cookie + "=" + encodeURIComponent(id) + "; path=/; max-age=" + YEAR2 + "; SameSite=Lax";
    return id;
  }

  function send(payload) {
    payload.write_key = CONFIG.writeKey;
    payload.anonymous_id = anonymousId();
    payload.occurred_at = new Date().toISOString();
    var body = JSON.stringify(payload);
    // text/plain keeps this a "simple" CORS request (no preflight); keepalive survives navigation.
    if (w.fetch) {
      return w.fetch(CONFIG.endpoint, {method: "POST", body: body, keepalive: true, mode: "cors",
                                       headers: {"Content-Type": "text/plain"}}).catch(function () {});
    }
    if (navigator.sendBeacon) { navigator.sendBeacon(CONFIG.endpoint, body); }
  }

  var api = {
    track: function (type, properties) { return send({type: type, properties: properties || {}}); },
    identify: function (traits) {
      traits = traits || {};
      return send({type: "identify", email: traits.email || "", phone: traits.phone || "",
                   token: traits.token || "", first_name: traits.first_name || "", last_name: traits.last_name || ""});
    },
    anonymousId: anonymousId
  };

  function call(args) {
    var method = api[args[0]];
    if (method) { return method.apply(null, Array.prototype.slice.call(args, 1)); }
  }

  var queued = (w.smt && w.smt.q) || [];
  w.smt = function () { return call(arguments); };
  w.smt.api = api;
  for (var i = 0; i < queued.length; i++) { call(queued[i]); }

  var token = new URLSearchParams(w.location.search).get("sm_t");
  if (token) { api.identify({token: token}); }

  d.addEventListener("submit", function (e) {
    var form = e.target;
    if (!form || !form.hasAttribute || !form.hasAttribute("data-sm-identify")) { return; }
    var field = form.querySelector("input[type=email], input[name=email]");
    if (field && field.value) { api.identify({email: field.value}); }
  }, true);
})(window, document);
