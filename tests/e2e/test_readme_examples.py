"""Issue 9 item 14: every example in README.md runs, so the README cannot rot.

Extracted from the README itself (not copied here):

- every ``onnxcomp ...`` command in a code block, in order, in one directory (later commands read what earlier
  ones wrote), and every inline `onnxcomp optimize ...` example; generic names stand for the bundled model
  (``model.onnx``) and its calibration data (``calib.npz``);
- every `--passes "SPEC"` shown in the text, run on the bundled model;
- the TOML recipe and the Python API snippets;
- the command synopsis: every option it shows exists on that command.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from onnxcomp.cli import main

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
MODELS = ROOT / "models"
GENERIC = {"model.onnx": MODELS / "digits_cnn.onnx", "calib.npz": MODELS / "digits_calib.npz"}
PLACEHOLDERS = re.compile(r"\[|\b(IN|OUT|A|B|SPEC|DATA|FILE)\b")


def _parse() -> tuple[list[tuple[str, str]], list[str]]:
    """(fenced code blocks as (language, text), and every command in README order: the lines of shell
    blocks and the inline `onnxcomp optimize ...` examples of the text)."""
    blocks: list[tuple[str, str]] = []
    commands: list[str] = []
    lang, body = None, []
    for line in README.splitlines():
        if line.startswith("```"):
            if lang is None:
                lang, body = line[3:].strip(), []
            else:
                blocks.append((lang, "\n".join(body) + "\n"))
                if lang in ("", "bash"):
                    commands.extend(body)
                lang = None
            continue
        if lang is not None:
            body.append(line)
        else:
            commands.extend(re.findall(r"`(onnxcomp optimize [^`]+)`", line))
    return blocks, commands


def _blocks(lang: str) -> list[str]:
    return [text for lg, text in _parse()[0] if lg == lang]


def _commands() -> list[str]:
    """``onnxcomp`` commands (no synopsis placeholders), in README order."""
    found = []
    for line in _parse()[1]:
        for part in line.split("&&"):
            part = part.split("#")[0].strip()
            if part.startswith("onnxcomp ") and not PLACEHOLDERS.search(part):
                found.append(part)
    return found


def _args(command: str, cwd: Path) -> list[str]:
    out = []
    for a in shlex.split(command)[1:]:
        if a in GENERIC:
            a = str(GENERIC[a])
        elif a.startswith("models/"):
            a = str(ROOT / a)
        out.append(a)
    return out


def test_readme_commands_run(tmp_path, monkeypatch, capsys):
    commands = _commands()
    assert len(commands) >= 4, commands  # the quick start, the prune example, the numbers' optimize + verify
    monkeypatch.chdir(tmp_path)
    for command in commands:
        code = main(_args(command, tmp_path))
        out = capsys.readouterr()
        assert code == 0, (command, out.out[-2000:], out.err)


@pytest.mark.parametrize("spec", sorted(set(re.findall(r'--passes "([^"]+)"', README))))
def test_readme_pass_specs_run(tmp_path, capsys, spec):
    args = ["optimize", MODELS / "digits_cnn.onnx", tmp_path / "o.onnx", "--passes", spec]
    code = main([str(a) for a in [*args, "--calib", MODELS / "digits_calib.npz", "-q"]])
    assert code == 0, (spec, capsys.readouterr().err)


def test_readme_recipe_runs(tmp_path, capsys):
    (recipe,) = _blocks("toml")
    (tmp_path / "r.toml").write_text(recipe)
    args = ["optimize", MODELS / "digits_cnn.onnx", tmp_path / "o.onnx", "--recipe", tmp_path / "r.toml"]
    code = main([str(a) for a in [*args, "--calib", MODELS / "digits_calib.npz"]])
    out = capsys.readouterr()
    assert code == 0, out.out[-2000:] + out.err
    assert "protected (protect=conv1)" in out.out  # the recipe's patterns select real layers


def test_readme_python_snippets_run(tmp_path, monkeypatch, capsys):
    from onnxcomp import runtime

    monkeypatch.chdir(tmp_path)
    snippets = _blocks("python")
    assert snippets and "onnxcomp.optimize(" in snippets[0]
    for code in snippets:
        if "runtime." in code and not runtime.available():
            continue  # a source checkout without the native runtime built
        for generic, real in GENERIC.items():
            code = code.replace(f'"{generic}"', repr(str(real)))
        exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "model.opt.onnx").exists()
    assert '"verification"' in capsys.readouterr().out


def test_readme_synopsis_options_exist():
    import typer

    from onnxcomp.cli import app

    group = typer.main.get_command(app)
    (synopsis,) = [b for b in _blocks("") if b.startswith("onnxcomp optimize IN OUT")]
    current = None
    for line in synopsis.splitlines():
        words = line.split("#")[0].split()
        if words and words[0] == "onnxcomp":  # a command, or an option of onnxcomp itself (--version)
            current = group if words[1].startswith("-") else group.commands[words[1]]
        valid = {o for p in current.params for o in p.opts}
        for opt in re.findall(r"--[a-z][a-z-]*", " ".join(words)):
            assert opt in valid, (current.name, opt)
