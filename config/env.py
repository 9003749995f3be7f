"""Small helpers to read settings from the environment (the healthchecks way)."""

import os
import secrets
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse


def envbool(name: str, default: str) -> bool:
    return os.getenv(name, default).strip().lower() in ("1", "true", "yes", "on")


def envint(name: str, default: str) -> int:
    return int(os.getenv(name, default))


def envsecret(name: str, default: str = "") -> str:
    """Read NAME, or the file named by NAME_FILE (Docker/Kubernetes secrets)."""
    path = os.getenv(f"{name}_FILE")
    if path:
        return Path(path).read_text().strip()
    return os.getenv(name, default)


def database_from_url(url: str, base_dir: Path) -> dict:
    """Parse DATABASE_URL: sqlite:///relative.db, sqlite:////abs/path.db, postgres://u:p@h:port/name."""
    u = urlparse(url)
    if u.scheme == "sqlite":
        name = u.path[1:] if u.path.startswith("/") else u.path
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": Path(name) if name.startswith("/") else base_dir / (name or "db.sqlite3")}
    if u.scheme in ("postgres", "postgresql", "pgsql"):
        options = {k: v[-1] for k, v in parse_qs(u.query).items()}
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(u.path[1:]),
            "USER": unquote(u.username or ""),
            "PASSWORD": unquote(u.password or ""),
            "HOST": u.hostname or "",
            "PORT": str(u.port or ""),
            "OPTIONS": options,
        }
    raise ValueError(f"DATABASE_URL scheme {u.scheme!r} is not supported (use sqlite:// or postgres://)")


def persistent_secret(path: Path) -> str:
    """A random secret created once (mode 0600) and read back by every later process."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # another process may be writing it right now
            value = path.read_text().strip()
            if value:
                return value
            import time

            time.sleep(0.01)
        raise RuntimeError(f"{path} is empty: delete it or set SECRET_KEY") from None
    value = secrets.token_urlsafe(50)
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    return value
