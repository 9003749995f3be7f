// Service worker for web push from the shop. Served from the app; scope "/".
self.addEventListener("push", function (event) {
  var data = {};
  try { data = event.data ? event.data.json() : {}; } catch (e) { data = {title: event.data && event.data.text()}; }
  event.waitUntil(self.registration.showNotification(data.title || "", {body: data.body || "", data: {url: data.url || "/"}}));
});
self.addEventListener("notificationclick", function (event) {
  event.notification.close();
  event.waitUntil(clients.openWindow(event.notification.data.url));
});
