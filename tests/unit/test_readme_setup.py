"""What the README promises a new user on a fresh machine, and the words of bench/RESULTS.md."""

import re
import tomllib

from tests.unit.test_repo_contract import ROOT, _readme_commands

README = (ROOT / "README.md").read_text()


def test_serving_installs_only_the_runtime_and_testing_installs_all():
    serve, test = _readme_commands()[:2]
    assert "'.[runtime]'" in serve and "[all]" not in serve and "pytest" not in serve
    assert "'.[all]'" in test
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert not any(re.match(r"(pytest|hypothesis|ruff|pexpect)\b", d) for d in extras["runtime"])
    assert any(d.startswith("pexpect") for d in extras["test"]) and "corral[runtime,test]" in extras["all"]


def test_fresh_debian_needs_are_named_and_installed_by_ci():
    for package in ("python3-venv", "g++", "cmake"):
        assert package in README
        assert f"need+=({package})" in (ROOT / ".ci" / "run").read_text()
    assert ". .venv/bin/activate" in README  # the tour runs `corral` directly


def test_ollama_environment_and_store_are_documented():
    assert "`CORRAL_HOST` (`host:port`), then `OLLAMA_HOST`" in README
    assert "`CORRAL_MODELS`, then `OLLAMA_MODELS`" in README
    assert "adds one directory to it: `registry/`" in README


def test_results_state_facts_not_people():
    text = (ROOT / "bench" / "RESULTS.md").read_text()
    for phrase in ("the lead", "engineers", "by me", "I ran", "we ran"):
        assert phrase not in text.lower(), phrase
