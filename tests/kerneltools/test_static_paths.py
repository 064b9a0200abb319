"""`vimbench kernels static` from any folder: the expectations and the compiled kernels are the checkout's."""
from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from vimbench.cli import app
from vimbench.kerneltools import static_check as sc

REPO = Path(__file__).resolve().parents[2]


def test_static_from_another_folder_reads_the_checkouts_expectations(tmp_path, monkeypatch):
    seen = {}

    class FakeChild:  # a compiler child, without compiling
        returncode = 0

        def __init__(self, cmd, stdin, stdout, stderr, text, env):
            seen["pythonpath"] = env["PYTHONPATH"].split(":")

        def communicate(self, input, timeout):
            return json.dumps([]), ""

        def poll(self):
            return 0

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sc.subprocess, "Popen", FakeChild)
    result = CliRunner().invoke(app, ["kernels", "static"])
    assert result.exit_code == 0, result.output
    assert str(REPO / "kernels" / "static_expectations.json") in result.output.replace("\n", "")
    assert seen["pythonpath"][0] == str(REPO)  # the child imports this checkout, not the cwd
    assert sc.default_expectations_path() == REPO / "kernels" / "static_expectations.json"
