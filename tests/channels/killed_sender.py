"""`python -m tests.channels.killed_sender CHECKPOINT MESSAGE_ID`: send one message and SIGKILL
this process at CHECKPOINT (COMPLIANCE.md B13's fault hook), against the test database.

before-sending:  after the DATA content went out, before the ledger commits `sending`
after-sending:   after that commit, before the final "." of the DATA
after-accepted:  after the server's 250, before the ledger records `sent`
"""

import os
import signal
import sys

import django


def main() -> None:
    checkpoint, message_id = sys.argv[1], int(sys.argv[2])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    from channels import ledger, outcomes, services

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    hand_over, outcome = ledger.Ledger.hand_over, ledger.Ledger.outcome

    def hand_over_hook(self, items):
        if checkpoint == "before-sending":
            die()
        held = hand_over(self, items)
        if checkpoint == "after-sending":
            die()
        return held

    def outcome_hook(self, message, result, *args):
        if checkpoint == "after-accepted" and result == outcomes.SENT:
            die()
        return outcome(self, message, result, *args)

    ledger.Ledger.hand_over, ledger.Ledger.outcome = hand_over_hook, outcome_hook
    services.messages_send([message_id])


if __name__ == "__main__":
    main()
