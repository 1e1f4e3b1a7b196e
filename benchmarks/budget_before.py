"""An old version of rover-safety in a directory of its own, for `bench_budget.py --daemon before=DIR/.venv`.

    python benchmarks/budget_before.py 2f354b4 /tmp/rs-before       # the tree (git archive) and its venv
    python benchmarks/budget_before.py --worktree /tmp/rs-after      # a copy of the work tree as it is now
    python benchmarks/budget_before.py --remove /tmp/rs-before

The tree is exported with `git archive` (nothing in the repository changes: no worktree, no branch), and its venv is
made from the same interpreter (/usr/bin/python3 when it exists) with `pip install -e DIR[systemd]`, constrained to
the versions installed in this venv (grpcio, protobuf, ...), so that only rover-safety's own code differs.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKER = ".bench-budget-commit"


def export(commit: str, target: Path) -> str:
    """`git archive` of `commit` into `target`; its description for the marker."""
    full = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", f"{commit}^{{commit}}"],
                          capture_output=True, text=True, check=True).stdout.strip()
    archive = subprocess.Popen(["git", "-C", str(ROOT), "archive", full], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(target)], stdin=archive.stdout, check=True)
    if archive.wait() != 0:
        raise SystemExit("git archive failed")
    return full[:12]


def copy_worktree(target: Path) -> str:
    """The files of the work tree as they are now (tracked and untracked, not ignored), other people's edits
    included, so that a long run measures one state of the code; its description for the marker."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    changed = subprocess.run(["git", "--no-optional-locks", "-C", str(ROOT), "status", "--porcelain"],
                             capture_output=True, text=True, check=True).stdout.splitlines()
    return f"{head} + work tree of {time.strftime('%Y-%m-%d %H:%M:%S')} ({len(changed)} paths changed or new)"


def make(commit: str | None, target: Path) -> Path:
    if target.exists():
        raise SystemExit(f"{target} exists: remove it first (--remove {target})")
    target.mkdir(parents=True)
    what = export(commit, target) if commit else copy_worktree(target)
    (target / MARKER).write_text(what + "\n")
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    subprocess.run([python, "-m", "venv", str(target / ".venv")], check=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        frozen = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"], capture_output=True,
                                text=True, check=True).stdout
        f.write("\n".join(line for line in frozen.splitlines() if not line.startswith("-e ")) + "\n")
        constraints = f.name
    try:
        subprocess.run([str(target / ".venv" / "bin" / "pip"), "install", "-q", "-c", constraints, "-e",
                        f"{target}[systemd]"], check=True)
    finally:
        Path(constraints).unlink()
    return target / ".venv"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("commit", nargs="?", help="the commit to export (e.g. 2f354b4, the last one before grpc.aio)")
    p.add_argument("target", type=Path, nargs="?", help="the directory to make (or to remove)")
    p.add_argument("--worktree", action="store_true", help="copy the work tree as it is now instead of a commit")
    p.add_argument("--remove", action="store_true", help="remove a directory this script made")
    args = p.parse_args(argv)
    if args.target is None and args.commit and (args.remove or args.worktree):
        args.target, args.commit = Path(args.commit), None
    if args.target is None:
        p.error("give the directory")
    if args.remove:
        if not (args.target / MARKER).exists():
            raise SystemExit(f"{args.target} was not made by this script ({MARKER} is missing): not removed")
        shutil.rmtree(args.target)
        print(f"removed {args.target}")
        return 0
    if not args.worktree and not args.commit:
        p.error("give the commit to export, or --worktree")
    venv = make(None if args.worktree else args.commit, args.target)
    print(f"ready: --daemon {'after' if args.worktree else 'before'}={venv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
