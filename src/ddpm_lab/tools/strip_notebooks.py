"""Pre-commit hook: strip outputs and execution counts from notebooks so git holds only their source.

Usage: ``python -m ddpm_lab.tools.strip_notebooks NOTEBOOK...``; exits 1 if it changed a file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def strip_notebook(path: Path) -> bool:
    """Remove outputs/execution counts in place; return True if the file changed."""
    original = path.read_text(encoding="utf-8")
    notebook = json.loads(original)
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    notebook.get("metadata", {}).pop("widgets", None)
    stripped = json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"
    if stripped != original:
        path.write_text(stripped, encoding="utf-8")
        return True
    return False


def main(argv: list[str] | None = None) -> int:
    changed = [p for p in (argv if argv is not None else sys.argv[1:]) if strip_notebook(Path(p))]
    for path in changed:
        print(f"stripped outputs from {path}")
    return 1 if changed else 0


if __name__ == "__main__":
    raise SystemExit(main())
