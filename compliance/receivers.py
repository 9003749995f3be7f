"""Signal receivers, connected in ComplianceConfig.ready(). Each is a few lines calling a service."""

import logging

from django.db.models.signals import post_save

from compliance import esp, services

log = logging.getLogger(__name__)


def on_consent_stated(sender, *, contact, channel, state, source, proof=None, occurred_at=None, **kwargs) -> None:
    services.consent_statement_receive(contact=contact, channel=channel, state=state, source=source,
                                       proof=proof, occurred_at=occurred_at)


def on_consents_stated(sender, *, statements, **kwargs) -> None:
    services.consent_statements_receive(statements=statements)


def on_tracking(sender, *, event, esp_name, **kwargs) -> None:
    esp.tracking_event_record(event=event, esp_name=esp_name)


def on_inbound(sender, *, event, esp_name, **kwargs) -> None:
    """mailto: unsubscribes: the token is in the subject (the From header can be forged)."""
    message = getattr(event, "message", None)
    subject = str(getattr(message, "subject", "") or "")
    services.mailto_unsubscribe(subject=subject)


def on_contact_saved(sender, *, instance, created, **kwargs) -> None:
    if created:
        services.intake_check(instance)


def on_contacts_created(sender, *, contacts, **kwargs) -> None:
    services.intake_check_batch(contacts)


def connect() -> None:
    from anymail.signals import inbound, pre_send, tracking

    from compliance.guard import pre_send_guard
    from segments.models import Contact
    from segments.signals import consent_stated, consents_stated, contacts_created

    consent_stated.connect(on_consent_stated, dispatch_uid="compliance.consent_stated")
    consents_stated.connect(on_consents_stated, dispatch_uid="compliance.consents_stated")
    tracking.connect(on_tracking, dispatch_uid="compliance.tracking")
    inbound.connect(on_inbound, dispatch_uid="compliance.inbound")
    pre_send.connect(pre_send_guard, dispatch_uid="compliance.pre_send_guard")
    contacts_created.connect(on_contacts_created, dispatch_uid="compliance.contacts_created")
    post_save.connect(on_contact_saved, sender=Contact, dispatch_uid="compliance.contact_intake")
