"""Dockerfile: hadolint-clean, multi-stage, non-root, base image chosen by a build argument."""

from __future__ import annotations

import re

from tests.packaging.tools import REPO, run, venv_tool

DOCKERFILE = REPO / "Dockerfile"


def test_dockerfile_passes_hadolint() -> None:
    result = run(
        [venv_tool("hadolint"), "--config", REPO / ".hadolint.yaml", DOCKERFILE],
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_builds_from_a_base_argument_in_two_stages_and_runs_non_root() -> None:
    text = DOCKERFILE.read_text()
    froms = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)

    assert re.search(r"^ARG BASE=", text, re.MULTILINE)
    assert froms == ["${BASE}", "${BASE}"]
    assert users
    assert users[-1].split(":")[0] not in ("0", "root")
    assert re.search(r"^HEALTHCHECK ", text, re.MULTILINE)
    assert re.search(r"^VOLUME \[\"/var/lib/tailseal\"\]", text, re.MULTILINE)
