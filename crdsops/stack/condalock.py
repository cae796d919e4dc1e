"""Read conda-lock.yml and check it against environment.yml, with the stdlib alone.

`bin/bootstrap` runs on a fresh machine whose Python has no PyYAML, so reading the lock
must not need it: PyYAML is used when importable, else `_load_block_yaml` reads the
block-style YAML subset that conda-lock writes (mappings, sequences, plain and quoted
scalars, `{}`/`[]`). `tests/stack` checks that both readers agree on real locks.

Freshness ("is the lock made from this environment.yml?"), in order:

1. `inv lock` asks conda-lock for `--md input_sha`, so the lock records the sha256 of
   each source file in `metadata.inputs_metadata`. Equal digests: fresh.
2. Otherwise, where conda-lock is importable, its own content hash of the sources
   (what `conda-lock --check-input-hash` compares) decides: a change that does not touch
   the specification (a comment) is still fresh.
3. Otherwise: stale, "run `inv lock`".
"""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib
import re

from crdsops.errors import CrdsOpsError

PLATFORM = "linux-64"


@dataclasses.dataclass(frozen=True)
class LockedPackage:
    name: str
    version: str
    manager: str  # "conda" | "pip"
    url: str
    sha256: str
    md5: str
    category: str

    @property
    def build(self) -> str:
        """Build string of a conda package (from its file name), '' for pip."""
        if self.manager != "conda":
            return ""
        stem = self.url.rsplit("/", 1)[-1]
        for suffix in (".tar.bz2", ".conda"):
            stem = stem.removesuffix(suffix)
        return stem.rsplit("-", 1)[-1]


@dataclasses.dataclass(frozen=True)
class Lock:
    path: pathlib.Path
    sha256: str
    content_hash: str
    channels: tuple[str, ...]
    sources: tuple[str, ...]
    inputs_sha256: dict[str, str]
    packages: tuple[LockedPackage, ...]

    def select(self, manager: str, categories: set[str]) -> list[LockedPackage]:
        return [p for p in self.packages if p.manager == manager and p.category in categories]

    @property
    def python(self) -> LockedPackage | None:
        return next((p for p in self.packages if p.manager == "conda" and p.name == "python"), None)

    @property
    def categories(self) -> set[str]:
        return {p.category for p in self.packages}


def sha256_file(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- YAML -----------------------------------------------------------------------------

def load_yaml(text: str, path: pathlib.Path):
    """Parse YAML TEXT (from PATH, for messages) with PyYAML if present, else the subset."""
    try:
        import yaml
    except ImportError:
        return _load_block_yaml(text, path)
    try:
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise CrdsOpsError(f"{path}:{where} is not valid YAML ({problem}); fix the file or regenerate it") from err


_INT = re.compile(r"[-+]?(0|[1-9][0-9_]*)$")
_FLOAT = re.compile(r"[-+]?([0-9][0-9_]*)?\.[0-9_]+([eE][-+][0-9]+)?$")


def _scalar(raw: str, path: pathlib.Path, lineno: int):
    s = raw.strip()
    if s.startswith("'"):
        if not s.endswith("'") or len(s) < 2:
            raise CrdsOpsError(f"{path}: line {lineno} is not valid YAML (unterminated quote); fix the file or regenerate it")
        return s[1:-1].replace("''", "'")
    if s.startswith('"'):
        import json

        try:
            return json.loads(s)
        except ValueError as err:
            raise CrdsOpsError(f"{path}: line {lineno} is not valid YAML (bad double-quoted string); fix the file or regenerate it") from err
    if s in ("", "~", "null", "Null", "NULL"):
        return None
    if s in ("true", "True", "TRUE"):
        return True
    if s in ("false", "False", "FALSE"):
        return False
    if s == "{}":
        return {}
    if s == "[]":
        return []
    if s[0] in "{[&*!|>%@`":
        raise CrdsOpsError(f"{path}: line {lineno} uses YAML this reader does not support ({s[:30]}); install PyYAML")
    if _INT.match(s):
        return int(s.replace("_", ""))
    if _FLOAT.match(s):
        return float(s.replace("_", ""))
    return s


def _load_block_yaml(text: str, path: pathlib.Path):
    """Read block-style YAML as conda-lock writes it (no PyYAML needed)."""
    lines = _block_lines(text, path)
    if not lines:
        return None
    parser = _BlockParser(lines, path)
    result = parser.block(lines[0][1])
    if parser.pos < len(lines):
        raise parser.bad(lines[parser.pos][0], "unexpected indentation")
    return result


def _block_lines(text: str, path: pathlib.Path) -> list[tuple[int, int, str]]:
    """The lines that carry content, as (line number, indent, content); comments and markers left out."""
    lines = []
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped in ("---", "..."):
            continue
        if "\t" in line[: len(line) - len(line.lstrip())]:
            raise CrdsOpsError(f"{path}: line {lineno} is not valid YAML (tab indentation); fix the file or regenerate it")
        if " #" in line and "'" not in line and '"' not in line:
            line = line.split(" #", 1)[0].rstrip()
        lines.append((lineno, len(line) - len(line.lstrip(" ")), line.strip()))
    return lines


_KEY = re.compile(r"""^('(?:[^']|'')*'|"(?:[^"\\]|\\.)*"|[^:'"][^:]*?|[^:'"]?)\s*:(?:\s+(.*)|$)""")
_ITEM_KEY = re.compile(r"""^('(?:[^']|'')*'|"(?:[^"\\]|\\.)*"|[^:'"{[][^:]*?)\s*:(\s|$)""")


class _BlockParser:
    """A recursive descent over the content lines; ``pos`` is the next line to read."""

    def __init__(self, lines: list[tuple[int, int, str]], path: pathlib.Path):
        self.lines, self.path, self.pos = lines, path, 0

    def bad(self, lineno: int, what: str) -> CrdsOpsError:
        return CrdsOpsError(f"{self.path}: line {lineno} is not valid YAML ({what}); fix the file or regenerate it")

    def block(self, indent: int):
        """The sequence or mapping whose lines start at INDENT."""
        content = self.lines[self.pos][2]
        if content.startswith("- ") or content == "-":
            return self.sequence(indent)
        return self.mapping(indent)

    def _is_item(self, indent: int) -> bool:
        if self.pos >= len(self.lines):
            return False
        _, ind, content = self.lines[self.pos]
        return ind == indent and (content.startswith("- ") or content == "-")

    def _starts_list(self, indent: int) -> bool:
        """The next line is "- ..." at INDENT: a list as the value of the key before it."""
        _, ind, content = self.lines[self.pos]
        return ind == indent and content.startswith("- ")

    def sequence(self, indent: int) -> list:
        seq = []
        while self._is_item(indent):
            lineno, _, content = self.lines[self.pos]
            rest = content[1:].lstrip()
            if not rest:
                self.pos += 1
                nested = self.pos < len(self.lines) and self.lines[self.pos][1] > indent
                seq.append(self.block(self.lines[self.pos][1]) if nested else None)
            elif _ITEM_KEY.match(rest):
                # "- key: value" starts a mapping whose keys sit at indent + 2
                item_indent = indent + (len(content) - len(rest))
                self.lines[self.pos] = (lineno, item_indent, rest)
                seq.append(self.block(item_indent))
            else:
                seq.append(_scalar(rest, self.path, lineno))
                self.pos += 1
        return seq

    def mapping(self, indent: int) -> dict:
        mapping: dict = {}
        while self.pos < len(self.lines) and self.lines[self.pos][1] == indent:
            lineno, _, content = self.lines[self.pos]
            if content.startswith("- "):
                raise self.bad(lineno, "a list item where a key was expected")
            m = _KEY.match(content)
            if not m:
                raise self.bad(lineno, "expected 'key: value'")
            key, value = str(_scalar(m.group(1), self.path, lineno)), m.group(2) or ""
            self.pos += 1
            if value.strip():
                mapping[key] = _scalar(value, self.path, lineno)
            elif self.pos < len(self.lines) and (self.lines[self.pos][1] > indent or self._starts_list(indent)):
                mapping[key] = self.block(self.lines[self.pos][1])
            else:
                mapping[key] = None
        if self.pos < len(self.lines) and self.lines[self.pos][1] > indent:
            raise self.bad(self.lines[self.pos][0], "unexpected indentation")
        return mapping


# --- the lock -------------------------------------------------------------------------

def read_lock(path: pathlib.Path, platform: str = PLATFORM) -> Lock:
    """Read and validate conda-lock.yml (version 1, the unified format) for PLATFORM."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise CrdsOpsError(f"{path} not found; run `inv lock` to make it from environment.yml")
    data_bytes = path.read_bytes()
    try:
        text = data_bytes.decode("utf-8")
    except UnicodeDecodeError as err:
        raise CrdsOpsError(f"{path} is not UTF-8 text; restore it from git or run `inv lock`") from err
    data = load_yaml(text, path)

    def bad(what: str) -> CrdsOpsError:
        return CrdsOpsError(f"{path} is not a conda-lock file ({what}); restore it from git or run `inv lock`")

    if not isinstance(data, dict) or data.get("version") != 1:
        raise bad("expected a mapping with `version: 1`")
    meta = data.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("content_hash"), dict):
        raise bad("no metadata.content_hash")
    if platform not in (meta.get("platforms") or []) or platform not in meta["content_hash"]:
        raise CrdsOpsError(f"{path} has no {platform} solution; run `inv lock` (it locks for {platform})")
    raw_packages = data.get("package")
    if not isinstance(raw_packages, list):
        raise bad("no package list")
    packages = []
    for i, entry in enumerate(raw_packages):
        if not isinstance(entry, dict):
            raise bad(f"package #{i + 1} is not a mapping")
        if entry.get("platform") != platform:
            continue
        missing = [k for k in ("name", "version", "manager", "url", "hash") if not entry.get(k)]
        if missing or not isinstance(entry["hash"], dict):
            raise bad(f"package #{i + 1} ({entry.get('name', '?')}) lacks {', '.join(missing) or 'hash'}")
        if entry["manager"] not in ("conda", "pip"):
            raise bad(f"package {entry['name']} has manager {entry['manager']!r}")
        sha = str(entry["hash"].get("sha256") or "")
        md5 = str(entry["hash"].get("md5") or "")
        if entry["manager"] == "pip" and not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise bad(f"pip package {entry['name']} has no sha256")
        category = entry.get("category") or "main"
        packages.append(LockedPackage(str(entry["name"]), str(entry["version"]), entry["manager"],
                                      str(entry["url"]), sha, md5, str(category)))
    if not packages:
        raise bad(f"no packages for {platform}")
    inputs = {}
    for name, info in (meta.get("inputs_metadata") or {}).items():
        if isinstance(info, dict) and info.get("sha256"):
            inputs[str(name)] = str(info["sha256"])
    return Lock(
        path=path,
        sha256=hashlib.sha256(data_bytes).hexdigest(),
        content_hash=str(meta["content_hash"][platform]),
        channels=tuple(str(c.get("url")) if isinstance(c, dict) else str(c) for c in meta.get("channels") or []),
        sources=tuple(str(s) for s in meta.get("sources") or []),
        inputs_sha256=inputs,
        packages=tuple(packages),
    )


def check_env_file(path: pathlib.Path) -> None:
    """A readable environment file that parses (when PyYAML is present) to a mapping."""
    if not path.is_file():
        raise CrdsOpsError(f"{path} not found; it is the stack's specification (restore it from git)")
    try:
        import yaml  # noqa: F401
    except ImportError:
        return  # the sha256 comparison still covers it
    data = load_yaml(path.read_text(encoding="utf-8", errors="replace"), path)
    if not isinstance(data, dict) or not isinstance(data.get("dependencies"), list):
        raise CrdsOpsError(f"{path} has no `dependencies:` list; fix it (see README, Stack)")


def check_fresh(lock: Lock, env_files: list[pathlib.Path], platform: str = PLATFORM) -> str:
    """Raise CrdsOpsError unless LOCK was made from ENV_FILES; return how it was decided."""
    for env in env_files:
        check_env_file(env)
    names = [e.name for e in env_files]
    if sorted(names) != sorted(pathlib.PurePath(s).name for s in lock.sources):
        raise CrdsOpsError(
            f"stale lock: {lock.path.name} was made from {', '.join(lock.sources) or 'unknown sources'}, "
            f"not {', '.join(names)}; run `inv lock`"
        )
    changed = [e for e in env_files if lock.inputs_sha256.get(e.name) != sha256_file(e)]
    if not changed:
        return "input sha256"
    try:
        import conda_lock  # noqa: F401
    except ImportError:
        raise CrdsOpsError(
            f"stale lock: {', '.join(e.name for e in changed)} changed since {lock.path.name} was made; run `inv lock`"
        ) from None
    if lock.content_hash in content_hashes(env_files, lock.channels, platform):
        return "conda-lock content hash"
    raise CrdsOpsError(
        f"stale lock: {', '.join(e.name for e in changed)} changed since {lock.path.name} was made "
        f"(conda-lock content hash differs); run `inv lock`"
    )


def content_hashes(env_files: list[pathlib.Path], channels: tuple[str, ...], platform: str = PLATFORM) -> set[str]:
    """conda-lock's content hashes of ENV_FILES (channels as locked), as `--check-input-hash` computes them."""
    import os

    from conda_lock.conda_lock import make_lock_spec
    from conda_lock.content_hash import backwards_compatible_content_hashes
    from conda_lock.virtual_package import default_virtual_package_repodata

    mapping = os.environ.get("CRDSOPS_PYPI_TO_CONDA") or str(pathlib.Path(__file__).with_name("pypi_to_conda.json"))
    spec = make_lock_spec(
        src_files=list(env_files),
        channel_overrides=list(channels) or None,
        platform_overrides=[platform],
        mapping_url=mapping,
    )
    repo = default_virtual_package_repodata()
    return backwards_compatible_content_hashes(spec, repo, platform)
