"""Sign-up. Log in, log out and password change are Django's own views (see urls.py)."""

from __future__ import annotations

from django.contrib.auth import login
from django.shortcuts import redirect, render

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
