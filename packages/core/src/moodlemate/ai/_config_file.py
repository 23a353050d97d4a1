"""The TOML config file: where it is, what it may hold, and named profiles.

Files, later ones overriding earlier ones key by key (profiles merge by name):

1. user-level: ``$XDG_CONFIG_HOME/moodlemate-ai/config.toml`` (``~/.config/...`` by default)
2. project-local: ``./moodlemate.toml`` in the current directory

``MOODLEMATE_CONFIG=/path/file.toml`` replaces both with that one file. The project-local file
came with whatever directory the process runs in (a cloned repository), so until the user
trusts it (:mod:`moodlemate.ai._project_trust`) its ``api_key_env``, ``log`` and ``redis``
are ignored, each with a warning, and :mod:`moodlemate.ai._config` keeps every credential it
did not itself hold away from where it points. The user-level file and an explicit
``MOODLEMATE_CONFIG`` are the user's own and trusted. tomllib is imported only when a file
exists (it costs more than ``import moodlemate.ai``), and a parsed file is reused until its
size or mtime changes, so ``GPT()`` in a loop stays cheap.

A file holds settings at its top level (the base every profile inherits), a ``profile`` key
naming the default profile, and ``[profiles.NAME]`` tables::

    profile = "work"
    app_title = "My tool"

    [profiles.work]
    provider = "openrouter"
    model = "anthropic/claude-sonnet-4"
    api_key_env = "WORK_OPENROUTER_KEY"
    fallbacks = ["openai/gpt-4o", "openai:gpt-4o-mini"]
"""

from __future__ import annotations

import logging
import os
import re
import stat
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from moodlemate.ai._secrets import register_secret
from moodlemate.ai.errors import ConfigurationError, InvalidEndpointError, ValidationError

__all__ = [
    "CONFIG_ENV",
    "PROFILE_ENV",
    "PROJECT_FILE",
    "ConfigFile",
    "Section",
    "config_paths",
    "load_config",
    "read_file",
    "register_header_secret",
    "trust_hint",
    "warn_untrusted",
]

log = logging.getLogger("moodlemate.ai")

CONFIG_ENV = "MOODLEMATE_CONFIG"
PROFILE_ENV = "MOODLEMATE_PROFILE"
PROJECT_FILE = "moodlemate.toml"
USER_FILE = Path("moodlemate-ai") / "config.toml"
DEFAULT_PROFILE_NAME = "default"

# key -> what it must be; every key is valid both at top level and in a profile.
SETTING_KEYS: dict[str, str] = {
    "provider": "a provider name",
    "model": "a model name",
    "endpoint": "an http(s) URL",
    "api_key": "an API key",
    "api_key_env": "an environment variable name",
    "app_url": "your app's URL (OpenRouter attribution)",
    "app_title": "your app's name (OpenRouter attribution)",
    "headers": "a table of header names to string values",
    "fallbacks": "a list of model names, tried in order when the model is out",
    "log": "a spend log's path (SQLite, ~ expanded)",
    "redis": "a Redis URL for shared budgets and pacing (redis://host:6379/0)",
    "pacing": "true, false, or a table of models to requests_per_minute/tokens_per_minute",
    "transport": "the HTTP transport's name (openai: lean, openai-sdk)",
    "api": "the vendor API calls go through (chat, responses)",
}
_TOP_ONLY = {"profile": "the default profile's name", "profiles": "a table of profiles"}
# Patterns stay strings until a file is checked (re caches them): GPT() compiles none.
_HEADER_NAME = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
# Header names that carry credentials (Authorization, X-Api-Key, Cookie, X-Auth, Api-Pass,
# X-Access, X-Signature, X-Session, ...): their values are redacted like keys.
_SECRET_HEADER_WORDS = (
    "auth",
    "key",
    "token",
    "secret",
    "cookie",
    "pass",
    "access",
    "sig",
    "session",
    "credential",
    "jwt",
    "bearer",
    "cert",
)


Origins = Mapping[str, Path | None]
"""Which file each setting of a section came from (None: merged from more than one)."""


class Section(NamedTuple):
    """One profile's settings, a label for messages, and each setting's file."""

    settings: dict[str, Any]
    where: str
    origins: Origins
    ignored: str | None = None
    """What the untrusted project file set for this section but may not use, explained."""


class ConfigFile:
    """The merged content of the config files found."""

    __slots__ = (
        "default_profile",
        "ignored",
        "origins",
        "paths",
        "profile_origins",
        "profiles",
        "settings",
        "untrusted",
    )

    def __init__(
        self,
        paths: tuple[Path, ...],
        settings: Mapping[str, Any],
        profiles: Mapping[str, Mapping[str, Any]],
        default_profile: str | None,
        origins: Origins | None = None,
        profile_origins: Mapping[str, Origins] | None = None,
    ) -> None:
        self.paths = paths
        self.settings = settings
        self.profiles = profiles
        self.default_profile = default_profile
        self.origins: Origins = origins or {}
        self.profile_origins: Mapping[str, Origins] = profile_origins or {}
        self.untrusted: Path | None = None
        """The project-local file, when it is among ``paths`` and not trusted."""
        self.ignored: Mapping[str | None, str] = {}
        """By profile (None: top level), the untrusted file's settings left out, explained."""

    def section(self, profile: str | None) -> Section:
        """The settings of ``profile`` (top level, overridden by the profile's table) and a
        label for messages. ``None`` picks the file's default profile, if any."""
        where = " or ".join(str(p) for p in self.paths)
        name = profile or self.default_profile
        if name is None and DEFAULT_PROFILE_NAME in self.profiles:
            name = DEFAULT_PROFILE_NAME
        if name is None:
            return Section(dict(self.settings), where, self.origins, self.ignored.get(None))
        table = self.profiles.get(name)
        if table is None:
            known = ", ".join(sorted(self.profiles)) or "none"
            raise ConfigurationError(f"no profile {name!r} in {where} (profiles: {known})")
        merged = {**self.settings, **table}
        origins = {**self.origins, **self.profile_origins.get(name, {})}
        if "headers" in self.settings and "headers" in table:
            merged["headers"] = {**self.settings["headers"], **table["headers"]}
            if self.origins.get("headers") != origins["headers"]:
                origins["headers"] = None
        ignored = self.ignored.get(name) or self.ignored.get(None)
        return Section(merged, f"profile {name!r} in {where}", origins, ignored)


def config_paths(environ: Mapping[str, str]) -> list[Path]:
    """The config files that apply, lowest precedence first (only those that exist)."""
    explicit = environ.get(CONFIG_ENV)
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigurationError(f"{CONFIG_ENV} names {str(path)!r}, which is not a file")
        return [path]
    xdg = environ.get("XDG_CONFIG_HOME") or str(Path("~/.config").expanduser())
    candidates = [Path(xdg) / USER_FILE, Path(PROJECT_FILE)]
    return [p for p in candidates if p.is_file()]


def load_config(environ: Mapping[str, str]) -> ConfigFile | None:
    """The merged config files, or None when there are none."""
    paths = config_paths(environ)
    if not paths:
        return None
    settings: dict[str, Any] = {}
    origins: dict[str, Path | None] = {}
    profiles: dict[str, dict[str, Any]] = {}
    profile_origins: dict[str, dict[str, Path | None]] = {}
    default_profile: str | None = None
    untrusted = None
    ignored: dict[str | None, str] = {}
    for path in paths:
        (top, file_profiles, file_default), sha256, resolved = _read(path)
        if path == Path(PROJECT_FILE) and not environ.get(CONFIG_ENV):
            from moodlemate.ai._project_trust import is_trusted

            if not is_trusted(resolved, sha256, environ):
                untrusted = path
                where = (resolved, sha256)  # the same name elsewhere is another file
                restricted = _restrictions.get(where)
                if restricted is None:
                    restricted = _restrictions[where] = _restricted(path, top, file_profiles)
                top, file_profiles, ignored = restricted
        settings.update(top)
        origins.update(dict.fromkeys(top, path))
        for name, table in file_profiles.items():
            profiles[name] = {**profiles.get(name, {}), **table}
            profile_origins[name] = {**profile_origins.get(name, {}), **dict.fromkeys(table, path)}
        default_profile = file_default or default_profile
    config = ConfigFile(tuple(paths), settings, profiles, default_profile, origins, profile_origins)
    config.untrusted = untrusted
    config.ignored = ignored
    return config


_UNTRUSTED_KEYS: dict[str, str] = {
    "api_key_env": "may not choose an environment variable to send",
    "log": "may not choose the file the spend log (calls, costs, and with the CLI the "
    "prompts and replies) is written to",
    "redis": "may not choose the Redis server that shared budgets and pacing send their counts to",
}
"""What an untrusted project file may not set at all, and why: each chooses a secret to send
or a destination for data (a file written, a server told about every call)."""
_CREDENTIAL_KEYS = ("api_key_env",)
"""Of those, the ones whose absence can leave a call without its key: a call that then has
none names them in its error."""
_warned: set[tuple[str, str]] = set()
_Restricted = tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str | None, str]]
_restrictions: dict[tuple[Path, str], _Restricted] = {}
"""An untrusted file's restricted content by (path, hash): GPT() in a loop stays cheap."""


def _restricted(
    path: Path, top: dict[str, Any], profiles: dict[str, dict[str, Any]]
) -> _Restricted:
    """An untrusted file's tables without the settings it may not use, each named in a
    warning (once per file content) that says how to trust the file; and, by profile (None:
    the top level), the credentials left out, for the error of a call that then has no key."""
    tables: dict[str | None, dict[str, Any]] = {None: top}
    tables.update(profiles)
    notes: dict[str | None, str] = {}
    dropped = False
    for name, table in tables.items():
        where = "top level" if name is None else f"[profiles.{name}]"
        for setting, reason in _UNTRUSTED_KEYS.items():
            if setting not in table:
                continue
            dropped = True
            what = f"ignoring {setting} = {_shown(setting, table[setting])} ({where}): an "
            what += f"untrusted project file {reason}"
            warn_untrusted(path, what)
            if setting in _CREDENTIAL_KEYS:
                notes[name] = f"{path.resolve()}: {what}; {trust_hint(path)}"
    if not dropped:
        return top, profiles, notes
    clean = {k: v for k, v in top.items() if k not in _UNTRUSTED_KEYS}
    kept = {
        n: {k: v for k, v in t.items() if k not in _UNTRUSTED_KEYS} for n, t in profiles.items()
    }
    return clean, kept, notes


def _shown(setting: str, value: object) -> str:
    """A setting's value for a message: a Redis URL without its password."""
    if setting == "redis" and isinstance(value, str):
        from moodlemate.ai._redis import shown_url

        return repr(shown_url(value))
    return repr(value)


def read_file(path: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]], str]:
    """One file's checked top level and profiles, and the SHA-256 of its bytes; a
    ConfigurationError when it is no valid config file."""
    (top, profiles, _), sha256, _ = _read(path)
    return top, profiles, sha256


def trust_hint(path: Path) -> str:
    """How to trust the project file at ``path`` (for messages)."""
    from moodlemate.ai._project_trust import TRUST_COMMAND, TRUST_ENV

    return f"review the file, then run `{TRUST_COMMAND} {path.resolve()}` (or set {TRUST_ENV}=1)"


def warn_untrusted(path: Path, what: str) -> None:
    """Warn once that an untrusted project file's setting is not used, and how to trust it."""
    key = (str(path.resolve()), what)
    if key in _warned:
        return
    _warned.add(key)
    log.warning("%s: %s; %s", path.resolve(), what, trust_hint(path))


# -- reading and checking one file ---------------------------------------------------------

_Parsed = tuple[dict[str, Any], dict[str, dict[str, Any]], str | None]
_cache: dict[Path, tuple[tuple[int, int], tuple[_Parsed, str, Path]]] = {}
_cache_lock = threading.Lock()


def _read(path: Path) -> tuple[_Parsed, str, Path]:
    """The checked content of one file, the SHA-256 of its bytes (what trust is given to)
    and its resolved path."""
    try:
        st = path.stat()
        resolved = path.resolve()
    except OSError as exc:
        raise ConfigurationError(f"cannot read config file {path}: {exc.strerror}") from None
    stamp = (st.st_mtime_ns, st.st_size)
    cached = _cache.get(resolved)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read config file {path}: {exc}") from None
    import tomllib  # only now: a file exists

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path}: invalid TOML: {exc}") from None
    parsed = _Checker(path, text).file(data)
    if _has_key(parsed) and _others_can_read(st):
        log.warning("config file %s holds an api_key and is readable by others: chmod 600", path)
    from moodlemate.ai._project_trust import digest

    content = (parsed, digest(raw), resolved)
    with _cache_lock:
        _cache[resolved] = (stamp, content)
    return content


def _has_key(parsed: _Parsed) -> bool:
    top, profiles, _ = parsed
    return "api_key" in top or any("api_key" in p for p in profiles.values())


def _others_can_read(st: os.stat_result) -> bool:
    return os.name == "posix" and bool(st.st_mode & (stat.S_IRGRP | stat.S_IROTH))


class _Checker:
    """Validates a parsed file; every message names the file, the table and the line."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def file(self, data: dict[str, Any]) -> _Parsed:
        top = {k: v for k, v in data.items() if k not in _TOP_ONLY}
        default = data.get("profile")
        if default is not None and not (isinstance(default, str) and default):
            self.fail("profile", "top level", f"must be a profile name, not {_kind(default)}")
        raw_profiles = data.get("profiles", {})
        if not isinstance(raw_profiles, dict):
            self.fail("profiles", "top level", "must be a table: [profiles.NAME]")
        profiles: dict[str, dict[str, Any]] = {}
        for name, table in raw_profiles.items():
            if not isinstance(table, dict):
                self.fail(name, "[profiles]", f"must be a table [profiles.{name}]")
            profiles[name] = self.section(table, f"[profiles.{name}]")
        if default is not None and default not in profiles:
            # It may be defined in another file; ConfigFile.section reports it if not.
            log.debug("%s: default profile %r is not defined here", self.path, default)
        return self.section(top, "top level"), profiles, default

    def section(self, table: dict[str, Any], where: str) -> dict[str, Any]:
        for key in table:
            if key not in SETTING_KEYS:
                hint = _suggest(key)
                self.fail(key, where, f"unknown key{hint}; known keys: {', '.join(SETTING_KEYS)}")
        for key, value in table.items():
            if key == "headers":
                self.headers(value, where)
            elif key == "fallbacks":
                self.fallbacks(value, where)
            elif key == "pacing":
                table = {**table, "pacing": self.pacing(value, where)}
            elif not isinstance(value, str) or not value:
                self.fail(key, where, f"must be {SETTING_KEYS[key]} (a string), not {_kind(value)}")
            elif key in ("api_key", "app_url", "app_title") and not _clean_header_value(value):
                register_secret(value if key == "api_key" else None)
                self.fail(key, where, "must be printable ASCII without line breaks")
        if "api_key" in table and "api_key_env" in table:
            self.fail("api_key_env", where, "set api_key or api_key_env, not both")
        if "api_key" in table:
            register_secret(table["api_key"])
        if "api_key_env" in table and not re.fullmatch(_ENV_NAME, table["api_key_env"]):
            self.fail("api_key_env", where, "must be an environment variable name")
        if "redis" in table:
            from moodlemate.ai._redis import check_redis_url

            try:
                check_redis_url(table["redis"])
            except ValidationError as exc:
                self.fail("redis", where, exc.message)
        if "endpoint" in table:
            from moodlemate.ai._urls import normalize_endpoint

            try:
                table = {**table, "endpoint": normalize_endpoint(table["endpoint"])}
            except InvalidEndpointError as exc:
                self.fail("endpoint", where, exc.message)
        return table

    def fallbacks(self, value: Any, where: str) -> None:
        if not isinstance(value, list):
            self.fail(
                "fallbacks", where, f"must be {SETTING_KEYS['fallbacks']}, not {_kind(value)}"
            )
        if not all(isinstance(model, str) and model for model in value):
            self.fail("fallbacks", where, "must hold only non-empty model names (strings)")

    def pacing(self, value: Any, where: str) -> object:
        """True or False (TOML's booleans, or a documented spelling such as "no"), or a
        table of models' limits."""
        from moodlemate.ai._flags import SPELLINGS, parse_flag

        if isinstance(value, bool | str):
            try:
                return parse_flag(value, "pacing")
            except ValidationError:
                self.fail("pacing", where, f"must be {SPELLINGS}, or a table of models")
        from moodlemate.ai._pacing import pace_limits

        try:
            pace_limits(value)
        except ValidationError as exc:
            self.fail("pacing", where, exc.message.removeprefix("pacing"))
        return value

    def headers(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            self.fail("headers", where, f"must be a table of strings, not {_kind(value)}")
        for name, text in value.items():
            if not re.fullmatch(_HEADER_NAME, name):
                self.fail(name, f"{where} headers", "is not a valid HTTP header name")
            if not isinstance(text, str) or not _clean_header_value(text):
                self.fail(name, f"{where} headers", "must be a printable ASCII string")
            register_header_secret(name, text)

    def fail(self, key: str, where: str, problem: str) -> Any:
        line = self.line_of(key)
        at = f":{line}" if line else ""
        raise ConfigurationError(f"{self.path}{at}: {where}: {key!r} {problem}")

    def line_of(self, key: str) -> int | None:
        """Best effort: TOML parsers do not report where a valid key was."""
        pattern = re.compile(rf"^\s*(\[\s*)?([\w.\-]*\.)?[\"']?{re.escape(key)}[\"']?\s*(=|\])")
        for number, line in enumerate(self.lines, 1):
            if pattern.match(line):
                return number
        return None


def register_header_secret(name: str, value: str) -> None:
    """Headers that look like credentials (``X-Api-Key``) are redacted like keys; so is the
    token of ``Bearer <token>``, which a server may echo on its own."""
    if any(word in name.lower() for word in _SECRET_HEADER_WORDS):
        register_secret(value)
        register_secret(value.rpartition(" ")[2])


def _clean_header_value(value: str) -> bool:
    return value.isascii() and value.isprintable()


def _kind(value: Any) -> str:
    return {dict: "a table", list: "an array", bool: "a boolean", str: "an empty string"}.get(
        type(value), type(value).__name__
    )


def _suggest(key: str) -> str:
    from difflib import get_close_matches

    match = get_close_matches(key, [*SETTING_KEYS, *_TOP_ONLY], n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""
