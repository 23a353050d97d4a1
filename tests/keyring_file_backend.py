"""A keyring backend for tests, loaded by the real keyring library through its documented
PYTHON_KEYRING_BACKEND setting: passwords in the JSON file $MOODLEMATE_TEST_KEYRING (a
headless test machine has no Secret Service or Keychain to talk to)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from keyring.backend import KeyringBackend
from keyring.errors import PasswordDeleteError


class FileKeyring(KeyringBackend):  # type: ignore[misc]
    priority = 1  # type: ignore[assignment]

    @property
    def _path(self) -> Path:
        return Path(os.environ["MOODLEMATE_TEST_KEYRING"])

    def _load(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self._path.read_text()))
        except FileNotFoundError:
            return {}

    def get_password(self, service: str, username: str) -> str | None:
        value = self._load().get(f"{service}/{username}")
        return value if isinstance(value, str) else None

    def set_password(self, service: str, username: str, password: str) -> None:
        data = self._load()
        data[f"{service}/{username}"] = password
        self._path.write_text(json.dumps(data))

    def delete_password(self, service: str, username: str) -> None:
        data = self._load()
        if data.pop(f"{service}/{username}", None) is None:
            raise PasswordDeleteError(username)
        self._path.write_text(json.dumps(data))
