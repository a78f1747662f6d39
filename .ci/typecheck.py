"""mypy over the four packages, as they are imported: ``ai_analytics.client`` and the rest.

The source folders (client/, core/, daemon/, cli/) become one import package only when
installed, and mypy cannot follow setuptools' editable-install hook; so it reads them through a
temporary tree of links named as they are imported. Run from the repository root with the
virtual environment's interpreter; its exit status is mypy's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGES = ("client", "core", "daemon", "cli")


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory(prefix="ai-analytics-mypy-") as tree:
        package = Path(tree, "ai_analytics")
        package.mkdir()
        for name in PACKAGES:
            package.joinpath(name).symlink_to(root / name, target_is_directory=True)
        command = [sys.executable, "-m", "mypy", "--config-file", str(root / "pyproject.toml")]
        for name in PACKAGES:
            command += ["-p", f"ai_analytics.{name}"]
        environment = {**os.environ, "MYPYPATH": tree}
        # This interpreter running mypy with our own arguments: no shell, no outside text.
        result = subprocess.run(command, env=environment,  # noqa: S603
                                capture_output=True, text=True, check=False)
        # Name files by their place in the repository, not in the temporary tree.
        sys.stdout.write(result.stdout.replace(f"{package}{os.sep}", ""))
        sys.stderr.write(result.stderr)
        return result.returncode


if __name__ == "__main__":
    sys.exit(main())
