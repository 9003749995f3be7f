"""The app's URLs plus a tiny storefront page that pastes the tracker snippet, as a shop theme would."""

from django.http import HttpResponse
from django.urls import path

from config.urls import urlpatterns as app_urls

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Kedai Demo — Mug</title>
<script>window.smt=window.smt||function(){(smt.q=smt.q||[]).push(arguments)};</script>
<script async src="/t/tracker.js"></script>
</head><body>
<h1>Teh tarik mug</h1>
<script>
  smt('track', 'product_viewed', {product_id: '42', sku: 'MUG-1', title: 'Teh tarik mug', price: '50.00'});
  smt('track', 'searched', {query: 'kopi'});
</script>
<form id="newsletter" data-sm-identify>
  <input type="email" name="email" id="email"><button type="submit" id="join">Join</button>
</form>
<p id="status"></p>
<script>
  document.getElementById('newsletter').addEventListener('submit', function (e) {
    e.preventDefault(); document.getElementById('status').textContent = 'thanks';
  });
</script>
</body></html>"""


def shop_page(request):
    return HttpResponse(PAGE)


urlpatterns = [path("test-shop/product", shop_page), *app_urls]
