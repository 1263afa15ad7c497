"""Sign-up, and password change (Django's view, which also ends the rights of sockets that
other sessions opened). Log in and log out are Django's own views (see urls.py)."""

from __future__ import annotations

from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.shortcuts import redirect, render

from webapp import events
from webapp.accounts.forms import SignUpForm


def signup(request):
    if request.user.is_authenticated:
        return redirect("project_list")
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("project_list")
    return render(request, "registration/signup.html", {"form": form})


class PasswordChangeView(auth_views.PasswordChangeView):
    def form_valid(self, form):
        response = super().form_valid(form)  # this session stays; every other one is logged out
        events.rights_changed(self.request.user.pk)  # and their sockets close
        return response
