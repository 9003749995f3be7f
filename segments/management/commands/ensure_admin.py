import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the first admin user if there is none, and print how to log in."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--username", default="admin")
        parser.add_argument("--url", default=f"{settings.SITE_URL}/admin/")

    def handle(self, *args, **opts) -> str:
        User = get_user_model()
        path = settings.VAR_DIR / "admin-password"
        username = opts["username"]
        if not User.objects.filter(username=username).exists():
            password = secrets.token_urlsafe(12)
            User.objects.create_superuser(username, f"{username}@localhost", password)
            path.write_text(password)
            path.chmod(0o600)
        elif path.exists() and User.objects.get(username=username).check_password(path.read_text().strip()):
            password = path.read_text().strip()
        else:
            return (f"Admin at {opts['url']} — user '{username}' exists with a password you chose "
                    f"(reset it with: python manage.py changepassword {username}).")
        return f"Admin at {opts['url']}  user: {username}  password: {password}"
