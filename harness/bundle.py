"""`python -m harness.bundle RUN_DIR [-o FILE]`: one archive that carries a suite run to another reader.

A run directory holds more than its results (Ray scratch, checkpoints, a lock file); a bundle holds what
a reader needs to see, merge and check the results, and nothing that depends on the machine bundling it:
- `suite.yaml`: the frozen suite, as the run wrote it;
- `results.parquet`: the rows, as `harness.store.read_results` gives them (the store consolidated);
- `studies.journal`: the Optuna studies (absent when the run has none);
- `splits.json` (with `--hash-splits`, the sha256 of each split's examples too), `environment.json`, `code_version.json`, `audit.json`: `harness.bundle_members`;
- `manifest.json`: the format and its version, the run's suite name and hash, and every other member's
  sha256 and size, which reading checks.

The archive is a gzip'd tar with sorted members, zero mtimes, no owner and a header without a name, so
the same run bundled twice (with the same pyarrow and zlib) gives the same bytes. `--check FILE` reads a
bundle back, verifies every member's sha256 and that the members agree with each other (exit 1 when they
do not, each contradiction named). Bad input (not a run directory, an unreadable archive, a member whose
hash does not match the manifest) exits 2 naming the file.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from harness.bundle_members import audit_digests, code_version, environment, split_recipes
from harness.errors import HarnessInputError
from harness.store import RESULTS_FILE, UnreadableRowError, read_results
from harness.suite import validate_suite

FORMAT = "harness-bundle"
FORMAT_VERSION = 1
SUFFIX = ".harness.tar.gz"
MANIFEST = "manifest.json"
STUDIES = "studies.journal"
REQUIRED = ("suite.yaml", RESULTS_FILE, "splits.json", "environment.json", "code_version.json", "audit.json")
MEMBERS = frozenset({*REQUIRED, STUDIES, MANIFEST})


class BundleError(HarnessInputError):
    """A run directory that cannot be bundled, or a file that is not a valid bundle; names the file."""


@dataclass(frozen=True, eq=False)
class Bundle:
    """A bundle read back and verified: its manifest and the bytes of every member."""

    path: Path
    manifest: Mapping[str, Any]
    members: Mapping[str, bytes]

    @property
    def suite_yaml(self) -> str:
        return self.members["suite.yaml"].decode()

    @property
    def suite_name(self) -> str:
        return str(self.manifest["suite_name"])

    @property
    def suite_hash(self) -> str:
        return str(self.manifest["suite_hash"])

    def rows(self) -> pd.DataFrame:
        """The rows, as `read_results` gave them when the run was bundled."""
        return pd.read_parquet(io.BytesIO(self.members[RESULTS_FILE]))

    def member_json(self, name: str) -> Any:
        return json.loads(self.members[name])


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=1, sort_keys=True) + "\n").encode()


def _parquet_bytes(rows: pd.DataFrame) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), sink)
    return sink.getvalue()


def run_members(run_dir: Path, hash_splits: bool = False) -> dict[str, bytes]:
    """Every member of the run's bundle, manifest included (raises `BundleError` naming what is wrong);
    `hash_splits` adds the sha256 of every split's examples (the dataset files must be on this machine)."""
    if not (run_dir / "suite.yaml").is_file() or not ((run_dir / "rows").is_dir() or (run_dir / RESULTS_FILE).is_file()):
        raise BundleError(f"{run_dir} is not a run directory (it needs suite.yaml and rows/ or {RESULTS_FILE})")
    try:
        rows = read_results(run_dir)
    except UnreadableRowError as error:
        raise BundleError(f"{error}; `python -m harness.run --resume` sets it aside") from None
    suite_text = (run_dir / "suite.yaml").read_text()
    suite = validate_suite(yaml.safe_load(suite_text), source=str(run_dir / "suite.yaml"))
    carried = sorted({str(h) for h in rows["suite_hash"].dropna()}) if "suite_hash" in rows else []
    if carried and carried != [suite.hash]:
        raise BundleError(f"{run_dir / 'suite.yaml'} hashes to {suite.hash} but the rows carry "
                          f"{', '.join(carried)}: `python -m harness.verify {run_dir}` says more")
    members = {"suite.yaml": suite_text.encode(), RESULTS_FILE: _parquet_bytes(rows),
               "splits.json": _json_bytes(split_recipes(suite, rows, hash_splits)),
               "environment.json": _json_bytes(environment(rows)),
               "code_version.json": _json_bytes(code_version(rows)), "audit.json": _json_bytes(audit_digests(rows))}
    if (run_dir / STUDIES).is_file():
        members[STUDIES] = (run_dir / STUDIES).read_bytes()
    members[MANIFEST] = _json_bytes({
        "format": FORMAT, "format_version": FORMAT_VERSION, "suite_name": suite.name, "suite_hash": suite.hash,
        "rows": len(rows), "members": {name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
                                       for name, data in sorted(members.items())}})
    return members


def archive_bytes(members: Mapping[str, bytes]) -> bytes:
    """The deterministic tar.gz of `members`: sorted, mtime 0, root-owned 0644, no name in the gzip header."""
    tar_buffer = io.BytesIO()
    with tarfile.open(fileobj=tar_buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(members):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(members[name]), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(members[name]))
    gzipped = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=gzipped, mtime=0, compresslevel=9) as stream:
        stream.write(tar_buffer.getvalue())
    return gzipped.getvalue()


def default_name(members: Mapping[str, bytes]) -> str:
    manifest = json.loads(members[MANIFEST])
    return f"{manifest['suite_name']}-{manifest['suite_hash']}{SUFFIX}"


def write_bundle(run_dir: Path, out: Path | None = None, hash_splits: bool = False) -> Path:
    """Bundle `run_dir` into `out` (a file, or a folder for `<suite>-<hash>.harness.tar.gz`; default here),
    atomically; returns its path."""
    members = run_members(Path(run_dir), hash_splits)
    if out is None or Path(out).is_dir():
        out = Path(out or ".") / default_name(members)
    temporary = out.with_name(f".{out.name}.tmp")
    try:
        temporary.write_bytes(archive_bytes(members))
        os.replace(temporary, out)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise BundleError(f"{out}: cannot write the bundle ({error.strerror or error})") from None
    return out


def _archive_members(path: Path) -> dict[str, bytes]:
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            for info in tar:
                if not info.isfile() or info.name not in MEMBERS or info.name in members:
                    raise BundleError(f"{path}: not a result bundle: member '{info.name}' is not one a bundle holds "
                                      f"({', '.join(sorted(MEMBERS))}, each once)")
                extracted = tar.extractfile(info)
                assert extracted is not None  # a regular file always has a stream
                members[info.name] = extracted.read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise BundleError(f"{path}: not a readable result bundle (a {SUFFIX} archive from "
                          f"`python -m harness.bundle`): {error}") from None
    return members


def _checked_manifest(path: Path, members: Mapping[str, bytes]) -> dict[str, Any]:
    if MANIFEST not in members:
        raise BundleError(f"{path}: not a result bundle: it holds no {MANIFEST}")
    try:
        manifest = json.loads(members[MANIFEST])
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BundleError(f"{path}: {MANIFEST} is not JSON ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{path}: {MANIFEST} does not describe a {FORMAT}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{path}: bundle format version {manifest.get('format_version')!r}; this harness reads "
                          f"version {FORMAT_VERSION}")
    return manifest


def read_bundle(path: Path) -> Bundle:
    """Read a bundle and check it: every member listed in the manifest is there with its sha256, nothing
    else is, and the required members are present. `BundleError` names the file and the member."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: no such bundle file")
    members = _archive_members(path)
    manifest = _checked_manifest(path, members)
    listed = manifest.get("members") or {}
    for name in sorted(set(members) - {MANIFEST} | set(listed)):
        if name not in members:
            raise BundleError(f"{path}: member {name} is listed in {MANIFEST} but missing")
        if name not in listed:
            raise BundleError(f"{path}: member {name} is not listed in {MANIFEST}")
        if hashlib.sha256(members[name]).hexdigest() != listed[name].get("sha256"):
            raise BundleError(f"{path}: member {name} does not match its sha256 in {MANIFEST} (changed or damaged)")
    missing = [name for name in REQUIRED if name not in members]
    if missing:
        raise BundleError(f"{path}: bundle lacks {', '.join(missing)}")
    return Bundle(path, manifest, members)


def describe(bundle: Bundle) -> str:
    """A few lines on a verified bundle: its run, rows, members and what its provenance says."""
    audit = bundle.member_json("audit.json")
    commits = ", ".join(str(c["value"]) for c in bundle.member_json("code_version.json")["commits"]) or "none named"
    return "\n".join([
        f"{bundle.path}: {FORMAT} v{bundle.manifest['format_version']}, suite {bundle.suite_name} "
        f"({bundle.suite_hash}), {bundle.manifest['rows']} rows",
        f"members (sha256 verified): {', '.join(sorted(bundle.members))}",
        f"code version(s): {commits}",
        f"audit: {audit['audited']} of {audit['rows']} rows carry a record, {audit['matching']} match their digest"])


def contradictions(bundle: Bundle) -> list[str]:
    """What a verified bundle's members say against each other: a suite that no longer hashes to the
    manifest's hash, rows of another hash or count, summaries that its rows no longer give, audit records
    that do not match their digests. Empty for a bundle as `harness.bundle` wrote it from a sound run."""
    found = []
    try:
        suite_hash = validate_suite(yaml.safe_load(bundle.suite_yaml), source=f"{bundle.path}:suite.yaml").hash
    except HarnessInputError as error:
        return [f"suite.yaml no longer validates: {error}"]
    if suite_hash != bundle.suite_hash:
        found.append(f"suite.yaml hashes to {suite_hash}, the manifest says {bundle.suite_hash}")
    rows = bundle.rows()
    strangers = sorted({str(h) for h in rows["suite_hash"].dropna()} - {bundle.suite_hash}) if "suite_hash" in rows else []
    if strangers:
        found.append(f"rows of another suite hash: {', '.join(strangers)}")
    if len(rows) != bundle.manifest.get("rows"):
        found.append(f"{RESULTS_FILE} holds {len(rows)} rows, the manifest says {bundle.manifest.get('rows')}")
    for name, summary in (("environment.json", environment), ("code_version.json", code_version),
                          ("audit.json", audit_digests)):
        if bundle.member_json(name) != json.loads(_json_bytes(summary(rows))):
            found.append(f"{name} is not what the rows give")
    audit = bundle.member_json("audit.json")
    if audit.get("matching") != audit.get("audited"):
        found.append(f"{audit.get('audited', 0) - audit.get('matching', 0)} audit record(s) do not match their "
                     "digest (edited after the run?)")
    return found


def check(path: Path) -> int:
    """`--check`: 0 when the bundle is sound, 1 when its members contradict each other (each printed)."""
    bundle = read_bundle(path)
    print(describe(bundle))
    problems = contradictions(bundle)
    for problem in problems:
        print(f"FAIL: {bundle.path}: {problem}")
    return 1 if problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.bundle", description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="a run directory (e.g. results/smoke/<suite-hash>); with --check, "
                        "a bundle")
    parser.add_argument("-o", "--out", type=Path, default=None,
                        help=f"the archive to write (default: <suite>-<hash>{SUFFIX} in the current directory)")
    parser.add_argument("--check", action="store_true",
                        help="read PATH as a bundle and verify it (exit 1 when its members contradict each other)")
    parser.add_argument("--hash-splits", action="store_true",
                        help="add the sha256 of every split's examples (reads the datasets' files, test included)")
    args = parser.parse_args(argv)
    try:
        if args.check:
            return check(args.path)
        print(write_bundle(args.path, args.out, args.hash_splits))
    except HarnessInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
