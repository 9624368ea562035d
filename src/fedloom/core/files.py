"""Small files a run is given (tokens, sizes): read whole, with errors naming the key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedloom.core.errors import ConfigError


def read_json(path: str | Path, key: str) -> Any:
    """The JSON document in the file config key ``key`` names; a ConfigError naming the key
    when it cannot be read or parsed."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except OSError as error:
        raise ConfigError([f"{key}: cannot read {path}: {error}"]) from None
    except ValueError as error:
        raise ConfigError([f"{key}: {path} is not JSON: {error}"]) from None
