"""Every command in README.md runs as written, in order, as in a fresh clone.

The README's ```bash blocks are extracted and run one after another in a copy of the repository's
recipes and examples (so a command that collides with an earlier one's output folder, or uses a
renamed key, fails here as it would for a new user). Training commands get a short schedule
appended (``train.epochs=1 train.max_steps_per_epoch=3``: later overrides win); nothing else is
changed. ``python -m jocor_plugin.X`` runs in this process (importing torch once); commands with an
environment prefix or ``accelerate launch`` run as subprocesses.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHORT = ["train.epochs=1", "train.max_steps_per_epoch=3"]
# commands not run here, and why; any other command in the README is run
NOT_RUN = {
    "make ": "the two set-up commands: they are what runs this suite",
    "source ": "activates the venv this suite already runs in",
    "~/shop_photos": "a placeholder for the reader's own folder",
    "my_pkg.my_methods": "a placeholder for the reader's own package",
}
COPIED = ("recipes", "examples", "accelerate_configs")


def readme_commands() -> list[str]:
    """The shell commands of the README's bash blocks: continuation lines joined, comments dropped."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    commands = []
    for block in blocks:
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            command = line.split("  #")[0].split(" # ")[0].strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


def _skip_reason(command: str) -> str | None:
    return next((why for marker, why in NOT_RUN.items() if marker in command), None)


def _is_training(words: list[str]) -> bool:
    return "jocor_plugin.run" in words and not {"--help-config", "--list-methods"} & set(words)


def _run(command: str, cwd: Path) -> tuple[int, str]:
    """One README command: in this process where it is ``python -m jocor_plugin.X``, else a subprocess."""
    words = shlex.split(command)
    env_prefix = {}
    while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
        key, value = words.pop(0).split("=", 1)
        env_prefix[key] = value
    if _is_training(words):
        words += SHORT
    if words[:2] == ["python", "-m"] and words[2].startswith("jocor_plugin.") and not env_prefix:
        module = importlib.import_module(words[2])
        out, err = io.StringIO(), io.StringIO()
        with contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = module.main(words[3:])
        return code, out.getvalue() + err.getvalue()
    if words[:1] == ["python"]:
        words[0] = sys.executable
    elif words[:2] == ["accelerate", "launch"]:
        words[:2] = [sys.executable, "-m", "accelerate.commands.launch"]
    env = {**os.environ, **{k: str(cwd / v) if k == "PYTHONPATH" else v for k, v in env_prefix.items()},
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(words, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def test_the_readme_has_commands_and_each_skipped_one_is_accounted_for():
    commands = readme_commands()
    assert sum(1 for c in commands if _skip_reason(c) is None) >= 6, commands
    for marker in NOT_RUN:  # a placeholder that left the README is not silently kept here
        assert any(marker in c for c in commands), f"{marker!r} is no longer in the README: drop it from NOT_RUN"


def test_every_readme_command_runs_as_written_in_order(tmp_path):
    for folder in COPIED:
        shutil.copytree(ROOT / folder, tmp_path / folder)
    ran = []
    for command in readme_commands():
        if _skip_reason(command):
            continue
        code, output = _run(command, tmp_path)
        assert code == 0, f"README command failed (exit {code}): {command}\n{output[-3000:]}"
        assert "Traceback" not in output, f"{command}\n{output[-3000:]}"
        ran.append(command)
    assert any("jocor_plugin.predict" in c for c in ran)  # it reads what an earlier command trained


if __name__ == "__main__":  # list what the test runs
    for c in readme_commands():
        print(("SKIP " if _skip_reason(c) else "RUN  ") + c)
    sys.exit(pytest.main([__file__]))
