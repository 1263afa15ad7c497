from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import AuthenticationForm, UserCreationForm

from webapp.accounts import throttle


class SignUpForm(UserCreationForm):
    email = forms.EmailField(required=True, help_text="Colleagues can invite you by this address.")

    class Meta(UserCreationForm.Meta):
        model = get_user_model()
        fields = ("username", "email")

    def clean_email(self) -> str:
        # Not checked against other accounts: the answer would tell anyone whose email has one.
        # (Invitations by an email several accounts share match none of them.)
        return self.cleaned_data["email"].strip()


class ThrottledAuthenticationForm(AuthenticationForm):
    """Django's log-in form, refused for a while after too many wrong passwords (throttle.py)."""

    def clean(self):
        username = self.cleaned_data.get("username") or ""
        address = self.request.META.get("REMOTE_ADDR", "") if self.request else ""
        wait = throttle.locked_for(username, address)
        if wait:
            minutes = max(1, round(wait / 60))
            raise forms.ValidationError(
                f"Too many failed log-ins. Try again in {minutes} minute{'s' if minutes != 1 else ''}.",
                code="throttled")
        try:
            cleaned = super().clean()
        except forms.ValidationError as error:
            if error.code == "invalid_login":
                throttle.failed(username, address)
            raise
        throttle.succeeded(username)
        return cleaned
