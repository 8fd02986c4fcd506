"""The app as hypercorn's worker processes import it: settings come from the environment."""

from __future__ import annotations

import json
import os

from ._app import create_app
from ._server import SETTINGS_ENV
from ._settings import ServerSettings

app = create_app(ServerSettings.from_dict(json.loads(os.environ[SETTINGS_ENV])), backend="asyncio")
