"""Keep a model server's adapter folder filled: run on each vLLM machine (beside the server) so
that the registry's load requests find every staged and active adapter version in
SCRIPTORIUM_LORA_SERVER_DIR/<sha256>, downloaded from the models storage and verified."""

from __future__ import annotations

import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from webapp.registry import lora_servers, store
from webapp.registry.models import AdapterVersion, VersionStatus


class Command(BaseCommand):
    help = "Download staged and active adapter versions into a model server's adapter folder, by checksum."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--into", default="", help="the folder (default: SCRIPTORIUM_LORA_SERVER_DIR)")
        parser.add_argument("--watch", type=float, default=0, metavar="SECONDS",
                            help="keep running, looking for new versions this often")
        parser.add_argument("--load", action="store_true",
                            help="then load the active versions on SCRIPTORIUM_LORA_SERVERS (after a server restart)")

    def handle(self, *args, into: str, watch: float, load: bool, **options) -> None:
        folder = Path(into or settings.SCRIPTORIUM_LORA_SERVER_DIR)
        while True:
            versions = AdapterVersion.objects.exclude(status=VersionStatus.RETIRED).exclude(stored="")
            for adapter in versions.select_related("base_model"):
                # Each pass checks what is kept: a copy changed, or replaced by a link, since is
                # fetched again; a version that cannot be had is reported and the others go on.
                target = folder / adapter.sha256
                kept = target.exists() or target.is_symlink()
                bad = kept and (target.is_symlink() or not target.is_dir() or not store.intact(target, adapter.sha256))
                if kept and not bad:
                    continue
                try:
                    store.local_folder(adapter.sha256, adapter.stored, cache=folder, verify=True)
                except store.FetchError as error:
                    self.stderr.write(f"{adapter.name}: {error}")
                    continue
                self.stdout.write(f"{adapter.name}: " + ("replaced a copy that was not the registered version "
                                                          "(files changed, or a link) in " if bad else "fetched into ")
                                  + str(target))
            if load:
                try:
                    lora_servers.sync(list(AdapterVersion.objects.active()))
                except lora_servers.LoraServerError as error:  # the server is not up yet: run again later
                    raise CommandError(f"could not load the active adapters: {error}") from error
                self.stdout.write("active adapters loaded on " + ", ".join(settings.SCRIPTORIUM_LORA_SERVERS))
                load = False
            if not watch:
                return
            time.sleep(watch)
