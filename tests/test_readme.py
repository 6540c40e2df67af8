"""README stays true: its Python example runs, and its config-group table names exactly what the package's conf/ has."""

import re
from pathlib import Path

import pytest

from ddpm_lab.cli import CONFIG_DIR

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()


@pytest.mark.slow
def test_readme_python_example_runs():
    block = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["samples"].shape == (4, 3, 32, 32) and namespace["bpd"].shape == (2,)


# Groups used as `+group=name` sweep presets: README's presets table lists them; every other group is a row of
# its group table. Hydra's own settings are not a user's choice.
PRESET_GROUPS = ("ablation", "launcher", "search", "seeds")


def test_readme_lists_every_config_choice():
    rows = dict(re.findall(r"^\| `(\w+)` \| (.+) \|$", README, re.M))
    groups = sorted(p.name for p in CONFIG_DIR.iterdir() if p.is_dir() and p.name != "hydra")
    for group in groups:
        choices = {p.stem for p in (CONFIG_DIR / group).glob("*.yaml")}
        if group in PRESET_GROUPS:
            missing = [c for c in sorted(choices) if f"+{group}={c}" not in README and f"`{c}`" not in README]
            assert not missing, f"README's presets table misses +{group}= {missing}"
            continue
        assert group in rows, f"README's group table lacks {group}"
        listed = set(re.findall(r"`(\w+)`", rows[group]))
        assert choices <= listed, f"README's {group} row misses {sorted(choices - listed)}"


def test_readme_names_every_console_script():
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for name in scripts:
        assert name in README, f"README does not document {name}"


def test_notebooks_are_stored_without_outputs():
    from ddpm_lab.tools.strip_notebooks import strip_notebook

    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        before = path.read_text()
        assert not strip_notebook(path), f"{path.name} has outputs in git; run pre-commit"
        assert path.read_text() == before
