from django import forms
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from compliance.models import Frequency, Topic, UnsubscribeFeedback


class SignupForm(forms.Form):
    email = forms.EmailField(label=_("Email address"), max_length=254)
    first_name = forms.CharField(label=_("First name (optional)"), max_length=100, required=False)
    # Never pre-ticked: consent must be a clear affirmative action (GDPR Recital 32).
    consent = forms.BooleanField(label=_("Yes, email me news and offers. I can unsubscribe at any time."),
                                 required=False, initial=False)


class PreferencesForm(forms.Form):
    email = forms.BooleanField(label=_("Marketing emails"), required=False)
    sms = forms.BooleanField(label=_("Marketing text messages"), required=False)
    topics = forms.MultipleChoiceField(label=_("Topics"), choices=Topic.choices, required=False,
                                       widget=forms.CheckboxSelectMultiple)
    frequency = forms.ChoiceField(label=_("How often"), choices=Frequency.choices, widget=forms.RadioSelect)

    def __init__(self, *args, channels: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        for name in ("email", "sms"):
            if name not in channels:
                del self.fields[name]


class FeedbackForm(forms.Form):
    reasons = forms.MultipleChoiceField(label=_("Why did you unsubscribe? (optional)"),
                                        choices=UnsubscribeFeedback.Reason.choices, required=False,
                                        widget=forms.CheckboxSelectMultiple)
    comment = forms.CharField(label=_("Anything else? (optional)"), required=False, max_length=2000,
                              widget=forms.Textarea(attrs={"rows": 3}))


class RecordConsentForm(forms.Form):
    """Consent a person gave staff directly: a signed paper form at the market stall, a call, a letter."""

    channel = forms.ChoiceField(label=_("channel"), choices=[("email", _("email")), ("sms", _("SMS"))])
    consent_text = forms.CharField(
        label=_("what they agreed to"), widget=forms.Textarea(attrs={"rows": 3}), max_length=2000,
        help_text=_("The exact wording the person saw and accepted (required: GDPR Art. 7(1); for SMS the "
                    "TCPA's prior express written consent)."))
    how = forms.CharField(label=_("how and where"), max_length=200,
                          help_text=_("e.g. \"signed paper form at the Bangsar market stall\""))
    obtained_on = forms.DateField(label=_("date given"), widget=forms.DateInput(attrs={"type": "date"}))
    reference = forms.CharField(label=_("proof reference"), max_length=200, required=False,
                                help_text=_("where the signed form or recording is kept (file name, folder)"))

    def clean_obtained_on(self):
        day = self.cleaned_data["obtained_on"]
        if day > timezone.localdate():
            raise forms.ValidationError(_("Consent cannot be given in the future."))
        return day
