"""Generate the Python, gRPC and type-stub modules in api/ from protos/rover_safety/api/*.proto.

    python scripts/gen_protos.py           # regenerate api/*_pb2*.py[i]
    python scripts/gen_protos.py --check   # exit 1 if api/ is stale

Run it with the project's venv interpreter: it uses that interpreter's grpc_tools and the
mypy-protobuf plugins installed next to it, so the output only depends on those versions.
"""

from __future__ import annotations

import argparse
import importlib.resources
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO / "protos"
PROTO_PACKAGE = "rover_safety/api"  # where the .proto files live under PROTO_ROOT
OUT_DIR = REPO / "api"  # installed as the Python package rover_safety.api
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def _plugin(name: str) -> str:
    """Path of a protoc plugin script, preferring the one next to this interpreter."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        sys.exit(
            f"gen_protos: {name} not found; install mypy-protobuf into this environment"
        )
    return found


def _is_generated(path: Path) -> bool:
    return path.is_file() and path.name.endswith(GENERATED_SUFFIXES)


def generate(dest: Path) -> dict[str, bytes]:
    """Run protoc into `dest`; return {file name: content} of the generated modules."""
    protos = sorted(
        p.relative_to(PROTO_ROOT).as_posix()
        for p in (PROTO_ROOT / PROTO_PACKAGE).glob("*.proto")
    )
    if not protos:
        sys.exit(f"gen_protos: no .proto files in {PROTO_ROOT / PROTO_PACKAGE}")
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    command = [
        sys.executable, "-m", "grpc_tools.protoc",
        f"--proto_path={PROTO_ROOT}",
        f"--proto_path={well_known}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={dest}",
        f"--grpc_python_out={dest}",
        f"--mypy_out={dest}",
        f"--mypy_grpc_out={dest}",
        *protos,
    ]  # fmt: skip
    result = subprocess.run(
        command, cwd=PROTO_ROOT, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        sys.exit(f"gen_protos: protoc failed:\n{result.stderr}")
    return {
        p.name: p.read_bytes()
        for p in sorted((dest / PROTO_PACKAGE).iterdir())
        if _is_generated(p)
    }


def current() -> dict[str, bytes]:
    """{file name: content} of the generated modules currently in api/."""
    return {
        p.name: p.read_bytes() for p in sorted(OUT_DIR.iterdir()) if _is_generated(p)
    }


def stale_files(fresh: dict[str, bytes], existing: dict[str, bytes]) -> list[str]:
    """Human-readable list of differences between fresh output and api/."""
    problems = []
    for name in sorted(fresh.keys() | existing.keys()):
        if name not in existing:
            problems.append(f"api/{name} (missing)")
        elif name not in fresh:
            problems.append(f"api/{name} (no longer generated)")
        elif fresh[name] != existing[name]:
            problems.append(f"api/{name} (differs)")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--check", action="store_true", help="only verify that api/ is up to date"
    )
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="gen_protos-") as tmp:
        fresh = generate(Path(tmp))

    existing = current()
    problems = stale_files(fresh, existing)
    if args.check:
        if problems:
            print(
                "gen_protos: generated code in api/ is stale; run `python scripts/gen_protos.py`:",
                file=sys.stderr,
            )
            for problem in problems:
                print(f"  {problem}", file=sys.stderr)
            return 1
        print(f"gen_protos: api/ is up to date ({len(fresh)} files)")
        return 0

    for name in existing.keys() - fresh.keys():
        (OUT_DIR / name).unlink()
    for name, content in fresh.items():
        if existing.get(name) != content:
            (OUT_DIR / name).write_bytes(content)
    print(f"gen_protos: {len(problems)} of the generated files in api/ changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
