"""Rate limits for the public forms that make us send email (sign-up, "send the link again").

Without them anyone can make the shop mail thousands of addresses that never asked (confirmation
bombing), which is how a small sender ends up on a blocklist. The per-address limit
(DOI_MAX_PER_DAY) stops repeats to one address; this stops one client trying many addresses.
Unsubscribing is never rate limited: it must always work.

Counts live in Django's cache: per process by default, shared by every web process when CACHE_URL
(or a Redis Q_BROKER_URL) points at Redis. Clients are told apart by IP (an IPv6 client by its /64,
which one household or phone gets whole); behind a proxy, TRUSTED_PROXY_HOPS says how many
X-Forwarded-For entries our own proxies added.
"""

import hashlib
import ipaddress
import time

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str | None:
    """The client's address: REMOTE_ADDR, or the entry our own proxies put in X-Forwarded-For."""
    hops = settings.TRUSTED_PROXY_HOPS
    if hops > 0:
        forwarded = [p.strip() for p in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if p.strip()]
        if len(forwarded) >= hops:
            candidate = forwarded[-hops]
            try:
                return str(ipaddress.ip_address(candidate))
            except ValueError:
                pass
    return request.META.get("REMOTE_ADDR") or None


def _client_key(ip: str | None) -> str:
    try:
        address = ipaddress.ip_address(ip or "")
    except ValueError:
        return "unknown"
    if address.version == 6:
        if address.ipv4_mapped:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def allow(request: HttpRequest, scope: str) -> bool:
    """Count this request against the scope's limit; False once the client is over it this window."""
    limit, window = settings.COMPLIANCE["PUBLIC_RATE_LIMITS"].get(scope, (0, 0))
    if limit <= 0:
        return True
    who = hashlib.sha256(_client_key(client_ip(request)).encode()).hexdigest()[:32]
    key = f"ratelimit:{scope}:{who}:{int(time.time() // window)}"
    cache.add(key, 0, timeout=window + 5)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=window + 5)
        count = 1
    return count <= limit
