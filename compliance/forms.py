from django import forms
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
