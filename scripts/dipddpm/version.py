"""Which code computed a result: the checkout's commit (with a dirty flag) and a hash of the
library sources, so a summary can list the versions its cells came from."""

from __future__ import annotations

import hashlib
import subprocess
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


@cache
def source_hash() -> str:
    """sha256 over the library's Python sources (path and content), first 12 hex digits."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE.rglob("*.py")):
        digest.update(path.relative_to(PACKAGE).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def git_commit(repo: str | Path = PACKAGE) -> str:
    """Short commit of ``repo``, ``-dirty`` when tracked files differ from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=repo,
            text=True,
            capture_output=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            text=True,
            capture_output=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


@cache
def code_version() -> dict[str, str]:
    """``code_commit`` and ``code_hash`` columns for every row a cell writes."""
    return {"code_commit": git_commit(), "code_hash": source_hash()}
