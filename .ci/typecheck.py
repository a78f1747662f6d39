"""mypy over the five packages, as they are imported: ``ai_analytics.client`` and the rest.

The source folders (client/, core/, daemon/, cli/, integrations/) become one import package
only when installed, and mypy cannot follow setuptools' editable-install hook; so it reads
them through a tree of links named as they are imported, ``build/typecheck/ai_analytics``.
The tree stays in one place so that mypy's cache stays valid between runs. Run from the
repository root with the virtual environment's interpreter; its exit status is mypy's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PACKAGES = ("client", "core", "daemon", "cli", "integrations")


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    tree = root / "build" / "typecheck"
    package = tree / "ai_analytics"
    package.mkdir(parents=True, exist_ok=True)
    for name in PACKAGES:
        link = package / name
        if not link.is_symlink():
            link.symlink_to(root / name, target_is_directory=True)
    command = [sys.executable, "-m", "mypy", "--config-file", str(root / "pyproject.toml")]
    for name in PACKAGES:
        command += ["-p", f"ai_analytics.{name}"]
    environment = {**os.environ, "MYPYPATH": str(tree)}
    # This interpreter running mypy with our own arguments: no shell, no outside text.
    result = subprocess.run(command, env=environment,  # noqa: S603
                            capture_output=True, text=True, check=False, cwd=root)
    # Name files by their place in the repository, not in the tree of links.
    sys.stdout.write(result.stdout.replace(f"{package}{os.sep}", "").replace(
        f"build{os.sep}typecheck{os.sep}ai_analytics{os.sep}", ""))
    sys.stderr.write(result.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
