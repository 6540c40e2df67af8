"""The code version in records: git's own answer for a checkout, none for a copy that git does not track (an
installed wheel, even inside another repository), and the leaderboard's column and warning when a group mixes
versions."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from ddpm_lab.leaderboard import build_leaderboard, find_runs, markdown
from ddpm_lab.provenance import PACKAGE_DIR, code_version, git_state


def git(directory: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=directory, capture_output=True, text=True, check=True).stdout.strip()


def test_git_state_of_a_checkout_an_untracked_copy_and_a_dirty_tree(tmp_path):
    repo = tmp_path / "repo"
    package = repo / "src" / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("x = 1\n")
    (repo / "conf.yaml").write_text("a: 1\n")
    git(repo, "init", "-q")
    git(repo, "-c", "user.email=t@t", "-c", "user.name=t", "add", ".")
    git(repo, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init")
    assert git_state.__wrapped__(package) == (git(repo, "rev-parse", "HEAD"), False)
    (repo / "conf.yaml").write_text("a: 2\n")  # a config changed: the numbers may move
    assert git_state.__wrapped__(package) == (git(repo, "rev-parse", "HEAD"), True)
    installed = repo / "venv" / "site-packages" / "pkg"  # inside the repository, but not tracked by it
    shutil.copytree(package, installed)
    assert git_state.__wrapped__(installed) == (None, None)
    assert git_state.__wrapped__(tmp_path) == (None, None)


def test_the_checkout_under_test_reports_its_own_commit():
    commit, _ = git_state.__wrapped__(PACKAGE_DIR)
    assert commit == git(PACKAGE_DIR, "rev-parse", "HEAD")
    assert code_version("0.1.0", commit, True) == f"0.1.0+g{commit[:7]}.dirty"
    assert code_version("0.1.0", None, None) == "0.1.0"


def write_record(path: Path, fid: float, version: str | None) -> None:
    path.mkdir(parents=True)
    summary = {"status": "completed", "arm": path.name[:-1], "seed": int(path.name[-1]), "choices": {}}
    summary["best"] = {"val/fid": {"value": fid, "step": 1}}
    summary["fid_protocol"] = {"num_samples": 100}
    if version:
        summary["code"] = {"version": version}
    (path / "metrics.json").write_text(json.dumps(summary))


def test_leaderboard_shows_code_versions_and_warns_when_a_group_mixes_them(tmp_path):
    write_record(tmp_path / "a0", 5.0, "0.1.0+g1111111")
    write_record(tmp_path / "a1", 5.5, "0.1.0+g2222222")
    board = build_leaderboard(find_runs([tmp_path]))
    (group,) = board.groups
    assert group.code_versions == ["0.1.0+g1111111", "0.1.0+g2222222"]
    text = markdown(board)
    assert "0.1.0+g1111111 0.1.0+g2222222" in text and "Warning: this group mixes code versions" in text
    shutil.rmtree(tmp_path / "a1")
    write_record(tmp_path / "a1", 5.5, "0.1.0+g1111111")
    assert "mixes code versions" not in markdown(build_leaderboard(find_runs([tmp_path])))
