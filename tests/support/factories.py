"""Factories in one place: rows made through the same services the app uses."""

from __future__ import annotations

import zlib

from django.contrib.auth import get_user_model

from webapp.documents import services as documents
from webapp.projects import services as projects
from webapp.projects.models import Membership, Role

PASSWORD = "correct-horse-battery-staple"


def make_user(username: str, **extra):
    return get_user_model().objects.create_user(
        username=username, email=f"{username}@example.com", password=PASSWORD, **extra
    )


def make_project(owner, *, editors=(), viewers=(), name: str = "Field guide"):
    project = projects.project_create(user=owner, name=name, description="Birds of the coast")
    for user in editors:
        Membership.objects.create(project=project, user=user, role=Role.EDITOR)
    for user in viewers:
        Membership.objects.create(project=project, user=user, role=Role.VIEWER)
    return project


def make_document(project, user, *, sections=("Introduction", "Gulls", "Terns")):
    document = documents.document_create(
        project=project, user=user, title="Coastal birds", topic="Birds you meet on the coast",
        audience="Walkers", tone="Friendly", target_words=900,
    )
    for heading in sections:
        documents.section_add(document=document, user=user, heading=heading, word_budget=300,
                              goal=f"Describe {heading.lower()}")
    return document


def make_pdf(lines: list[str], raw_ops: str = "") -> bytes:
    """A real, minimal PDF with one page of text in Helvetica, built byte by byte (`raw_ops`:
    content-stream operators added as they are, for hostile files)."""
    text_ops = ["BT", "/F1 12 Tf", "72 720 Td", "14 TL"]
    for line in lines:
        escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        text_ops.append(f"({escaped}) '")
    text_ops.append(raw_ops)
    text_ops.append("ET")
    stream = zlib.compress("\n".join(text_ops).encode("latin-1"))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def vouched():
    """An override for tests that activate a random adapter the promotion gate never measured
    (the gate itself: tests/test_promotion_gate.py)."""
    from webapp.registry.services import Override

    return Override(by="tests", why="a test's random adapter")
