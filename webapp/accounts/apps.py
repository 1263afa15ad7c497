from __future__ import annotations

from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "webapp.accounts"
    label = "accounts"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_out

        # Logging out ends the rights of the sockets that session opened, at once.
        user_logged_out.connect(_logged_out, dispatch_uid="scriptorium-logged-out")


def _logged_out(sender, request, user, **kwargs) -> None:
    from webapp import events

    if user is not None:
        events.rights_changed(user.pk)
