"""The seams between packages that docs/architecture.md promises, checked on the source."""

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sam3tune"


def _sources(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(PACKAGE.parent)): p.read_text() for p in sorted(folder.rglob("*.py"))}


def test_eval_never_imports_predict():
    imports = re.compile(r"^\s*(from sam3tune\.predict|import sam3tune\.predict)", re.M)
    assert [name for name, text in _sources(PACKAGE / "eval").items() if imports.search(text)] == []


def test_only_run_dir_spells_the_names_in_a_run_folder():
    names = ["config.yaml", "metrics.jsonl", "checkpoints", "loss_curve.png", "resumes.jsonl", "tb"]
    pattern = re.compile("|".join(rf"[\"']{re.escape(n)}[\"']" for n in names))
    spelled = {
        name: sorted(set(pattern.findall(text)))
        for name, text in _sources(PACKAGE).items()
        if name != "sam3tune/run_dir.py" and pattern.search(text)
    }
    assert spelled == {}


def test_commands_catch_no_exception_the_cli_handles():
    """Errors a user can fix are caught in one place, ``cli.main``; no command handler catches them (the
    one ``except OSError`` left is ``data convert``'s fallback from a hard link to a copy)."""
    handlers = {n: t for n, t in _sources(PACKAGE).items() if n.endswith("/command.py")}
    assert len(handlers) == 9
    catching = {name: re.findall(r"except [^:]+:", text) for name, text in handlers.items()}
    assert {name: found for name, found in catching.items() if found} == {
        "sam3tune/data/command.py": ["except OSError:"]
    }
