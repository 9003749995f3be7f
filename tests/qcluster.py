"""Start a real `manage.py qcluster` in a subprocess against the test database."""

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def test_database_url() -> str:
    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{Path(s['NAME']).resolve()}"
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


@contextmanager
def running_cluster(*, workers: int = 2, extra_env: dict | None = None):
    """Yield the qcluster process; stop it with SIGTERM (then SIGKILL) afterwards."""
    env = {**os.environ, "DATABASE_URL": test_database_url(), "Q_WORKERS": str(workers), "Q_POLL": "0.1",
           "Q_LOG_LEVEL": "ERROR", "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    env.pop("PYTEST_VERSION", None)
    connection.close()  # nothing of ours held open while the cluster starts
    proc = subprocess.Popen([sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        # The cluster's own shutdown: SIGTERM to the parent, which stops its workers.
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_for(predicate, *, timeout: float = 60, every: float = 0.2, proc=None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise RuntimeError(f"qcluster exited with {proc.returncode}:\n{out[-3000:]}")
        time.sleep(every)
    return False
