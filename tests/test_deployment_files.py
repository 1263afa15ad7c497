"""The deployment files (deploy/: systemd units, a Procfile, docker-compose.yml, the environment
file; the Dockerfile) checked as far as this machine allows: they are not run here (no Docker
daemon, no systemd as init), but every unit passes `systemd-analyze verify` against this
checkout, every process they start is a share the launcher knows, every setting they give is one
the code reads, and the storage URL they use makes S3 storage."""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess

import pytest
import yaml

from tests.support.processes import ROOT
from webapp.launcher import PROCESSES

DEPLOY = ROOT / "deploy"
# Read by libraries or by the servers beside ours, not by our code.
OTHERS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "HF_HUB_OFFLINE", "VLLM_ALLOW_RUNTIME_LORA_UPDATING",
          "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"}


def _settings_we_read() -> set[str]:
    names = set()
    for path in [*ROOT.glob("webapp/**/*.py"), *ROOT.glob("agents/**/*.py")]:
        text = path.read_text()
        names |= set(re.findall(r"""env_(?:str|int|bool|list|float)\(\s*["']([A-Z0-9_]+)["']""", text))
        names |= set(re.findall(r"""(?:environ|env)(?:\.get)?[\[(]\s*["']([A-Z0-9_]+)["']""", text))
    return names


KNOWN = _settings_we_read() | OTHERS


def _check_command(argv: list[str]) -> None:
    """A command of ours: the launcher with a share it knows, or a management command that parses."""
    if "webapp.launcher" in argv:
        assert argv[argv.index("webapp.launcher") + 1:][:2] == ["run", "--only"], argv
        parts = argv[argv.index("--only") + 1].split(",")
        assert parts and set(parts) <= set(PROCESSES), argv
    elif "manage.py" in argv:
        from django.core.management import get_commands, load_command_class

        name, args = argv[argv.index("manage.py") + 1], argv[argv.index("manage.py") + 2:]
        command = load_command_class(get_commands()[name], name)
        command.create_parser("manage.py", name).parse_args(args)
    else:
        raise AssertionError(f"not a command of ours: {argv}")


def test_the_environment_file_names_only_settings_that_are_read():
    lines = [line for line in (DEPLOY / "scriptorium.env.example").read_text().splitlines()
             if line.strip() and not line.startswith("# ") and line.strip() != "#"]
    names = {line.lstrip("# ").split("=", 1)[0] for line in lines}
    assert names - KNOWN == set()
    assert {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "STORAGE_URL", "SCRIPTORIUM_MODEL_CACHE"} <= names


def test_the_storage_url_of_the_examples_makes_s3_storage(monkeypatch):
    from webapp.settings import storages_from_env

    example = next(line.split("=", 1)[1] for line in (DEPLOY / "scriptorium.env.example").read_text().splitlines()
                   if line.startswith("STORAGE_URL="))
    monkeypatch.setenv("STORAGE_URL", example)
    storages = storages_from_env()
    for alias, folder in (("default", "media"), ("models", "store")):
        assert storages[alias]["BACKEND"] == "storages.backends.s3.S3Storage"
        assert storages[alias]["OPTIONS"]["bucket_name"] == "scriptorium"
        assert storages[alias]["OPTIONS"]["location"] == f"prod/{folder}"
        assert storages[alias]["OPTIONS"]["endpoint_url"] == "https://s3.internal:9000"
    monkeypatch.setenv("STORAGE_URL", "https://bucket.example.com")
    with pytest.raises(ValueError, match="must look like s3://"):
        storages_from_env()
    monkeypatch.setenv("STORAGE_URL", "s3://bucket?endpoint=x")
    with pytest.raises(ValueError, match="unknown options"):
        storages_from_env()


@pytest.mark.parametrize("unit", sorted(p.name for p in (DEPLOY / "systemd").glob("*.service")))
def test_each_systemd_unit_verifies_and_starts_a_share_of_scriptorium(unit, tmp_path):
    text = (DEPLOY / "systemd" / unit).read_text()
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read_string(text)
    start = shlex.split(parser["Service"]["ExecStart"].replace("\\\n", " "))
    if not start[0].endswith("/vllm"):
        _check_command(start)
    assert parser["Service"]["EnvironmentFile"] == "/etc/scriptorium/scriptorium.env"
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    here = (text.replace("/opt/scriptorium/.venv/bin/python", str(ROOT / ".venv" / "bin" / "python"))
            .replace("/opt/scriptorium", str(ROOT)).replace("/opt/vllm/bin/vllm", shutil.which("echo"))
            .replace("/etc/scriptorium/scriptorium.env", str(DEPLOY / "scriptorium.env.example")))
    here = re.sub(r"(?m)^User=.*$", "User=root", here)
    (tmp_path / unit).write_text(here)
    for other in (DEPLOY / "systemd").glob("*.service"):  # the units it names
        if other.name != unit:
            (tmp_path / other.name).write_text("[Service]\nExecStart=/bin/true\n")
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / unit)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_procfile_starts_shares_of_scriptorium():
    for line in (DEPLOY / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            _check_command(shlex.split(line.split(":", 1)[1]))


def test_docker_compose_runs_each_share_against_shared_services_only():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    ours = {name: service for name, service in services.items() if service.get("image") == "scriptorium"}
    assert set(ours) == {"web", "workers", "agents"}
    shares = set()
    for name, service in ours.items():
        _check_command(service["command"])
        shares |= set(service["command"][-1].split(","))
        assert set(service["environment"]) - KNOWN == set(), name
        for dependency in service["depends_on"]:
            assert dependency in services
        for volume in service.get("volumes", []):  # its own cache, never a folder shared with another
            assert volume.split(":")[0] in compose["volumes"] and volume.split(":")[0].startswith(name), volume
        assert service["environment"]["STORAGE_URL"].startswith("s3://")
    assert shares == set(PROCESSES)
    gpu = ours["agents"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and gpu["capabilities"] == ["gpu"]
    assert set(compose["volumes"]) >= {v.split(":")[0] for s in services.values() for v in s.get("volumes", [])}


def test_the_dockerfile_copies_what_exists_and_builds_the_editor_where_the_pages_load_it():
    dockerfile = (ROOT / "Dockerfile").read_text()
    for source in re.findall(r"(?m)^COPY (?!--from)(.+) \S+$", dockerfile):
        for path in source.split():
            assert (ROOT / path).exists(), path
    package = (ROOT / "frontend" / "package.json").read_text()
    assert "--outfile=../static/build/editor.js" in package and "COPY --from=assets /src/static/build/" in dockerfile
    assert "requirements.txt" in dockerfile and "requirements-models.txt" in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "var"} <= set(ignored)  # nothing local or secret goes into the image


def test_deployment_files_hold_no_secrets():
    for path in [*DEPLOY.rglob("*"), ROOT / "Dockerfile"]:
        if path.is_file():
            text = path.read_text()
            for line in text.splitlines():
                match = re.match(r"\s*#?\s*([A-Z_]*(?:SECRET|PASSWORD|KEY)[A-Z_]*)\s*[=:]\s*(\S+)", line)
                if match and not match.group(1).endswith("_ID") and not match.group(2).startswith(("${", "change-me")):
                    raise AssertionError(f"{path.name}: {line.strip()}")
